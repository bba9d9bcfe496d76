"""Object proposals: generators (:mod:`.generators`), the cache (:mod:`.cache`) and the
parallel precomputation behind ``deconvnet proposals CONFIG`` (:mod:`.precompute`).

Every proposal set is ``{image id: float32 K x 4 [x1, y1, x2, y2]}`` in pixels of the
original image (x2/y2 exclusive), best score first, clipped to the image (unless
``data.proposals.extended``), boxes whose window (``data.proposals.min_size_on``) has a
shorter side below ``data.proposals.min_size`` (112, official scripts) dropped, at most
``data.proposals.top_k`` (50) kept. An image may have none (K = 0): the evaluator then
falls back to the whole image.
"""

from deconvnet.data.proposals.precompute import (
    ensure_proposals,
    load_proposals,
    precompute_from_config,
    proposal_splits,
    proposals_for_image,
)

__all__ = ["ensure_proposals", "load_proposals", "precompute_from_config", "proposal_splits", "proposals_for_image"]
