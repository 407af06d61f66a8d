"""Document sources: built-in offline generators, Hugging Face datasets and local files.

`sources.ingest` turns any of them into train and held-out parquet files of (id, text, hash).
"""
