"""Graph jobs (Metapath2vec on the user–item–stream graph). Not built yet: see the open issue
"Metapath2vec embeddings of users, items and live streams"."""
