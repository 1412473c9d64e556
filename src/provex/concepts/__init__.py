"""Concept bottlenecks: what a model's embedding says about human concepts, Z = H c^T.

An encoder gives embeddings H = f(X) and a head g gives the prediction Y^ = g(H); concept
vectors c_j (unit, K x D) turn embeddings into concept scores Z = normalize(H) c^T, which the
betting tests of :mod:`provex.stats` then test for importance::

    from provex.concepts import ModelEncoder, ConceptBottleneck, learn_cav
    enc = ModelEncoder(provex.models.load("mnist-cnn"))     # H: input of the last layer
    h_pos, h_neg = enc.encode(x_with_loops), enc.encode(x_random)
    cb = ConceptBottleneck.from_cavs({"closed loop": learn_cav(h_pos, h_neg)})
    h = enc.encode(x_test); z = cb.scores(h); y = enc.head(h)[:, 8]
    provex.stats.skit(y, z.T)                               # one test per concept

Encoders: :class:`ModelEncoder` (any classifier; CAV concepts, offline),
:class:`TextEncoder` (MiniLM sentence embeddings, offline, ``provex[text]``),
:class:`OpenClipEncoder` (open_clip image + text from weights on disk, ``provex[clip]``).
:mod:`provex.concepts.mnist` defines pixel-level stroke concepts for MNIST; ``provex
test-concepts`` runs the whole pipeline from the command line.
"""

from provex.concepts.bottleneck import CAV, ConceptBottleneck, learn_cav, learn_cavs
from provex.concepts.encoders import ModelEncoder, OpenClipEncoder, TextEncoder
from provex.concepts.mnist import MNIST_CONCEPTS, mnist_concept_sets, stroke_traits

__all__ = [
    "CAV",
    "MNIST_CONCEPTS",
    "ConceptBottleneck",
    "ModelEncoder",
    "OpenClipEncoder",
    "TextEncoder",
    "learn_cav",
    "learn_cavs",
    "mnist_concept_sets",
    "stroke_traits",
]
