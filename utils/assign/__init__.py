"""Candidate selection and matchers shared by the loss strategies.

Everything here is pure: tensors in, tensors out, no state, no gradients (``@torch.no_grad``).
"""
