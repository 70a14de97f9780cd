"""unmix.bench: real-time factor and separation quality, always beside references measured in the same run.

`unmix-bench` (bench/cli.py) is a thin layer over these modules. This package imports nothing itself, so the
benchmark's worker processes for the lean runtime stay free of torch; import from the modules:

    unmix.bench.rtf        RtfSettings, benchmark_rtf(settings, bundle=, config_name=, separators=) → report
    unmix.bench.sdr        SdrSettings, evaluate_sdr(settings) → report
    unmix.bench.scores     sdr (the paper's eq. 2), bsseval_sdr (museval, optional)
    unmix.bench.baselines  scaled_mixture_estimates, ideal_ratio_mask
    unmix.bench.reference  PaperStylePath (the paper's inference path), exact_separate (whole-signal PyTorch)
    unmix.bench.fidelity   compare_stem: code agreement, SNR and SDR change against a reference
    unmix.bench.report     write_outputs (JSON + markdown + PNG); rtf_report / sdr_report render them
"""
