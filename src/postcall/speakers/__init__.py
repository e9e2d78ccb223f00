"""Who said what.

- ``attribution``: words to speakers, from a timeline (tracks, events, diarization)
  and names for the speakers found.
- ``diarize``: offline diarization of a mixed recording (speech regions, frame
  embeddings, clustering, re-segmentation).
- ``clustering``: spectral clustering with an eigengap speaker count.
- ``encoder``: the bundled speaker encoder (Resemblyzer's weights, numpy only).
- ``der``: diarization error rate, for tests and benchmarks.
"""
