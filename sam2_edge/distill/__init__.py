"""sam2_edge.distill: smaller, faster students of a SAM 2 teacher (`sam2-edge distill`).

* `students` — is a student compatible with and smaller than its teacher; its initial weights
  (the teacher's wherever shapes match, Hiera blocks mapped stage by stage).
* `data` — video files and frame folders (DAVIS / SA-V layouts) found, probed and streamed clip
  by clip; the held-out split. `augment` — SAM 2's training augmentations, one draw per clip.
* `prompts` — prompts sampled from the teacher's own masks (clicks, boxes, masks): no labels.
* `rollout` — a clip tracked through a model's own memory in torch (differentiable).
* `losses` — feature, mask, object-score, pointer and memory-conditioned-feature losses.
* `trainer` — the two stages, one process or DDP (torchrun), checkpoints and `--resume`.
* `store` — the student safetensors and the training state, written atomically.
* `report` — metrics JSONL, the loss curve, J&F against the teacher on held-out video.
* `cli` — `sam2-edge distill`.
"""
