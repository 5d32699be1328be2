"""Classical scorers: NSS (NIQE, BRISQUE), official FR ports (SSIM, MS-SSIM, GMSD, VIF, VSI), fast FR,
hand-made NR measures."""
