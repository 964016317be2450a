"""Loss functions: adversarial objectives and PatchNCE."""
