"""READ model: backbone wrapper, SAM head, [SEG] projection, SasP, losses, builder."""
