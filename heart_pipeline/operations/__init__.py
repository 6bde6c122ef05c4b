"""Operations: the local stack, the background Prefect server, crashed-run automation, doctor, preflight,
runtime helpers, run folders and compute."""
