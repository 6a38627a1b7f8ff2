"""The colorization stages around `train_colorizer` (paper §III, §III-B, §IV-B-3, Appendices C–D).

`config` (the preset section `colorizer:`), `data` (what the stages read and record), `train` (step 1,
its fine-tune, step 2), `selection` (snapshot ranking), `pseudolabels` and `bundle` (the model users
get). The Dagster assets of the colorization group (assets/colorization.py) each call one function of
these, so the whole two-step scheme also runs without an orchestrator:

1. step 1, adversarial domain adaptation: synthetic black-and-white pages with their colour pages
   (and the colour page's coloring draft) supervised, real black-and-white pages of the train split
   (with their drafting-network drafts, S of eq. 9) adversarially; several generator snapshots;
   then, still in step 1 (Appendix D: "in the first step, we fine-tune the model with a paired dataset
   of real data after training"), each snapshot is fine-tuned for at most two epochs on the matched
   real page pairs (`finetune_snapshots`);
2. snapshot selection: the paper's authors judged snapshots by eye; we rank the fine-tuned snapshots
   by a distribution distance (KID or FID) between their colorings of real training pages and colour
   pages, and let a person override the ranking;
3. pseudolabels: the selected snapshots colorize the real training pages, several distinct
   colorings per page. §IV-B-3: "coloring drafts for color images and self-training colorings are
   generated using the GAN inversion model rather than the drafting model": each snapshot's automatic
   coloring is inverted into the Coloring Latent Space, its draft is what step 2 sees with it, and
   further colorings follow drafts whose colour rows (the fine half of W+) are mixed with random
   CLS vectors, so the labels differ in palette and teach the network to follow a draft;
4. step 2, self-training on synthetic pairs plus pseudolabelled real pages: the final colorizer
   (§III: "in the end, we train the drafting network and colorization network independently in a
   supervised manner with synthetic data and real data with pseudolabels"). The drafting network's
   second round trains on the same pseudolabels (mangacolor/stages/drafting.py).

Real black-and-white pages come only from `training_pages(page_splits)`; every stage records the
ids it read, so an asset check can prove the holdout was never trained on.

Ablations are switches of the same stages (`VariantFlags`, Tables 1 and 3): the synthetic data level
(xDoG only, + refiner, + CUT), without drafts, without adversarial adaptation, without self-training.
"""
