"""The model and what training writes for inference: network, pretrained weights, transforms, checkpoint format."""
