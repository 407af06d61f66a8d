"""Everything a study's runs read: corpora, the tokenizer, mixing arithmetic, streams; `prepare` makes them."""
