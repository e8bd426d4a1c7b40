"""Models: the quantile LSTM and its feature scaler."""
