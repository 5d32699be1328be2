"""What a run leaves for people: HTML report, plots, print job report, summary, MLflow record."""
