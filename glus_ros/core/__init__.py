"""One GLUS core for every job: the window loop, its grounders and the per-frame encoders.

``glus-ros segment`` / ``eval``, the grounding backend and the streaming engine all run GLUS models through
these modules; the model config's ``loop`` section (own family or the released weights) chooses the policies.
"""
