"""dlwb — the helper package of the deep-learning course workbook.

Each module holds code that a chapter has already taught, and each helper's docstring
names that chapter. Importing ``dlwb`` does nothing but define names: no seeding, no
device selection, no downloads. Import the module you need explicitly::

    from dlwb import runtime, data, train, plots

Modules
-------
runtime   seeds, device choice, environment report          (chapter 00)
download  dataset manifest and verified, cached downloads   (chapter 00)
data      dataset loaders with offline fallbacks            (chapter 00)
plots     curves, live plots, image grids, confusion-matrix plots (chapters 00, 03)
losses    loss functions from scratch                       (chapter 01)
optim     optimizers and learning-rate schedules            (chapter 02)
backprop  a two-layer MLP with hand-written backprop        (chapter 03)
metrics   confusion matrix, precision, recall, F1, ROC, AUC (chapter 03)
train     the one training loop, with callbacks             (chapter 03)
conv      convolution and pooling from scratch (im2col)    (chapter 04)
rnn       RNN and LSTM cells from scratch, char LSTM, TBPTT   (chapter 05)
text      character vocabulary and language-model batches  (chapter 05)
gan       GAN losses, Fréchet distance, the GAN training step (chapter 06)
attention scaled dot-product and multi-head attention      (chapter 07)
gpt       a character-level GPT, sampling, throughput, MFU  (chapter 07); a KV cache (chapter 11)
transfer  freezing, low-rank adapters (LoRA)                (chapter 08)
distributed  process groups, hand all-reduce, local launch (chapter 09)
compress  int8 quantization, pruning, distillation        (chapter 10)
bpe       byte-level byte-pair encoding from scratch      (chapter 11)
scaling   scaling-law fits, training and serving costs    (chapter 11)
checks    self-checks for lab exercises

The instructor's tools (releasing labs, grading, lecture output) are the separate package
``coursekit``, which imports ``dlwb``; ``dlwb`` never imports it.
"""

__version__ = "0.1.0"
