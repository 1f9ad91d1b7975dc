"""Grounding backends: the language model that answers a referring request, behind one interface.

- ``base``: the interface (``GroundingBackend.ground`` -> ``TargetGrounding`` per expression);
- ``glus``: GLUS (the default; [SEG] prompts per frame for its SAM 2 head);
- ``molmo2`` (+ ``molmo2_folder``, ``molmo2_inputs``): Molmo2 through transformers, points per frame;
- ``sam3`` (+ ``sam3_folder``, ``sam3_inputs``, ``sam3_postprocess``, ``sam3_tracks``): SAM 3 through
  transformers, every instance of a noun phrase with its own id (streamed by ``streaming/concept.py``);
- ``loading``: which backend a ``--model`` names (a config's ``backend:`` key, a folder's ``model_type``);
- ``video``: a whole video from a pointing backend, points -> SAM 2 masks propagated both ways.
"""
