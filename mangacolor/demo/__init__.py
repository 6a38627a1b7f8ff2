"""The demo world: generators of stand-in data, so tests and the demo need no download.

`corpus` draws manga-like colour, black-and-white and matched pages from a seed (the paper's data,
§IV-A, in miniature); `sitegen` builds and serves a static gallery that the web crawler is tested on; `rescans` makes hard
re-scans of corpus pages with a known transform, for the matcher's tests and benchmark.
Nothing here runs in production: the real ingest lives in `mangacolor.data`.
"""
