"""The per-run training loop and what it needs (model, optimizer, schedule, faults). Imports no Ray:
it runs in a Ray Train worker, in a plain process and on a GPU machine without Ray alike."""
