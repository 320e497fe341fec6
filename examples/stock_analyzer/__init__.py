"""Stock analysis as jobs: load NSE prices, compute indicators, store the results."""
