"""unmix.bench: real-time factor (`rtf`) and separation quality (`sdr`), always beside references measured in the
same run; `unmix-bench` (cli.py) is a thin layer over the modules. This package imports nothing itself, so the
benchmark's worker processes for the lean runtime stay free of torch: import from the modules (rtf, sdr, scores,
baselines, reference, fidelity, report).
"""
