"""Network architectures for the deep scorers: pure ``nn.Module`` code, no I/O, no downloads.

Every net takes float32 images in [0, 1] and applies the input normalisation its published
weights expect (ImageNet statistics, LPIPS's scaling layer, local contrast normalisation) itself,
so the scorer side stays generic. Weights come from the weights store; ``convert`` maps the
published checkpoints onto these modules' state-dict keys.
"""
