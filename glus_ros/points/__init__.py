"""VideoMolmo-style pointing for GLUS: points instead of, or beside, [SEG] masks.

- ``coords``: the pixel / normalised point conventions every module shares;
- ``text``: Molmo's point tags, written and leniently parsed;
- ``matching``: one-to-one matching, point accuracy and counting accuracy;
- ``labels``: point supervision derived from masks (VideoMolmo's SAM 2-selected points);
- ``propagation``: points -> masks with SAM 2 point prompts and bidirectional memory propagation;
- ``predictor``: the model's points (point head on the [SEG] states) for every frame of a video;
- ``evaluation``: pointing scores on a referring-video dataset.
"""
