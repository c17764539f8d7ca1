"""What the SQL engines share: the compiler from the IR to SQL (compiler.py) and its dialect hooks."""
