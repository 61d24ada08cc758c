"""What a rewrite unlocks: ``torch.func`` transforms through the rewritten model.

``transforms`` (per-sample gradients, multi-tangent forward gradients), ``private`` (DP-SGD
with Opacus: ``for_opacus``), ``checks`` (each checked against backprop through the
original) and ``blockers`` (naming the Function that still blocks a transform).
"""
