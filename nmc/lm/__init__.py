"""Language models on chip: corpora and vocabularies (:mod:`.corpus`), and
running a compiled EGRU language model bundle on text (:mod:`.host`)."""
