"""Protection at rest: the keyring, pseudonyms, field encryption under per-subject keys, crypto-shredding.

Nothing here imports the store's engine module, so ``governance.store.db`` can import our tables.
"""
