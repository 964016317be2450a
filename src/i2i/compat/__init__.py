"""Loading files written by the published implementations (CUT, FastCUT, QS-Attn, EnCo, CycleGAN/ASGIT)."""
