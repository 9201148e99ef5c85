"""Customer analytics (顧客分析): summaries, RFM/CPM, repeat KPIs, cohorts and predictions.

`pipeline/` computes the per-customer and aggregate snapshots with Ibis; `clv/` holds the
statistical models (BG/NBD, MBG/NBD, Pareto/NBD, Gamma-Gamma, sBG) as plain numpy/scipy
functions that need no database.
"""
