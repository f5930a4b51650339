"""The ``LocalStore``: SQLite for documents and their filter index, a float32 file of vectors."""
