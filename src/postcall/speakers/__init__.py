"""Who said what.

- ``attribution``: words to speakers, from a timeline (tracks, events, diarization)
  and names for the speakers found.
- ``diarize``: offline diarization of a mixed recording (speech regions, frame
  embeddings, clustering, re-segmentation).
- ``clustering``: spectral clustering with an eigengap speaker count.
- ``embedding``: what a speaker model offers (``SpeakerEmbedder``) and which one to load.
- ``encoder``: the bundled speaker encoder (Resemblyzer's weights, numpy only).
- ``onnx_embedder``: an operator's own ONNX speaker model; ``fbank``: its Kaldi features.
- ``der``: diarization error rate, for tests and benchmarks.
"""
