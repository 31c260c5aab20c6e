"""Measure a model against ground truth and baselines.

- :mod:`.metrics`: PSNR, SSIM and the mask metrics;
- :mod:`.baselines`: the methods every score is compared with;
- :mod:`.evaluate`: scoring a model over pairs;
- :mod:`.report`: the HTML report;
- :mod:`.sheet`: contact sheets of before and after;
- :mod:`.audit`: can a classifier still tell cleaned scans from never-marked ones?
  (:mod:`.audit_inputs` reads and checks the folders, :mod:`.probe` is the
  classifier and its statistics, :mod:`.audit_report` writes audit.html).
"""
