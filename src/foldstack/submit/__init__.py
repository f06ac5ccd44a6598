"""The submission side: predict (what `make predict` and the Kaggle kernel run), the submission files and
their ledger, the code competition's bundle and kernel, the offline kernel check on Kaggle's versions,
Kaggle's image versions, the kaggle CLI, and the file and code competition flows (flows)."""
