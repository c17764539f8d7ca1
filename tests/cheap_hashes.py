"""Tests hash passwords with argon2id's cheapest parameters.

Production hashes use argon2-cffi's defaults (~0.1-0.25 s each, by design); the tests make and log in
hundreds of users, so every test process (and every server a test starts) imports this module first.
It replaces the one hasher of engine/app/passwords.py, which user administration and login both use."""
from argon2 import PasswordHasher

import engine.app.passwords

engine.app.passwords._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
