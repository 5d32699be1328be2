"""Deep scorers: the torch scorer base, the zoo (Kang, LPIPS, DISTS, DBCNN, HyperIQA), trained models,
the default NR scorer."""
