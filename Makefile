# deepauc pipeline. Every stage is one `deepauc` subcommand and one file target, so a
# rerun skips finished work and `make -n` shows what would run. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
ifneq ($(filter command line environment,$(origin PY)),)
# an interpreter given on the command line or in the environment (tests, a Kaggle notebook's
# own torch: `make ... PY=python` after `pip install --no-deps -e .`) is used as is: no venv
STAMP :=
else
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
endif
DEEPAUC := $(PY) -m deepauc
# how `train` is launched: e.g. TRAIN_LAUNCH="$(VENV)/bin/torchrun --nproc_per_node=4 -m deepauc"
TRAIN_LAUNCH ?= $(DEEPAUC)
# GPUS=0,1,2,3 with make -j4: every train/predict job waits for a free GPU of the list and
# runs with only that one visible (deepauc.pipeline.gpu_slot), one job per GPU at a time
GPUS ?=
GPU_SLOT := $(if $(GPUS),$(PY) -m deepauc.pipeline.gpu_slot --gpus $(GPUS) --lock-dir .gpu-slots --)

# ---- experiment set -----------------------------------------------------------------------
EXP ?= demo
DATA ?= data/$(EXP)
EXTERNAL ?= $(DATA)/external
# RUN=<name>: a variant of the experiment beside the others in one clone (other SEEDS, SETS_<stem>,
# NO_EXTERNAL, FOLD_SCHEME...): its tables, folds, models, predictions, stamps, submission and
# reports are named by RUN; the data, configs and image cache stay the experiment's
RUN ?= $(EXP)
# NO_EXTERNAL=1: the training table is the competition rows only, whatever external folders exist
NO_EXTERNAL ?=
# each external set's folder; point one elsewhere (e.g. a read-only /kaggle/input/... folder)
ISIC2019 ?= $(EXTERNAL)/isic2019
ISIC2018 ?= $(EXTERNAL)/isic2018
ISIC2017 ?= $(EXTERNAL)/isic2017
MALIGNANT ?= $(EXTERNAL)/malignant
# the competition's sample submission; a resized set ships none: then SAMPLE= must name it
SAMPLE ?= $(DATA)/sample_submission.csv
# test images: jpeg/test/ in the Kaggle layout, test/ in a resized set (docs/data-layouts.md)
TEST_IMAGES ?= $(if $(wildcard $(DATA)/jpeg/test),$(DATA)/jpeg/test,$(DATA)/test)
# one source folder per cache size, e.g. DATA_384=/kaggle/input/jpeg-melanoma-384x384 (same
# image names; external rows keep their own files); a size without one is cut from DATA
images_of = $(if $(wildcard $(1)/jpeg/test),$(1)/jpeg/test,$(1)/test)
SIZE_ROOTS = $(foreach s,$(SIZES),$(if $(DATA_$(s)),$(s)))
# the card's memory in GB (GPU_MEM=16 on a T4/P100): the configs' per-card settings (train.memory)
GPU_MEM ?=
# one run per seed for every CNN, averaged into one member (see SEEDED_CNN_RULES)
SEEDS ?=
# the demo is a first look on a CPU: 3 folds; the real recipe: 5
N_FOLDS_demo := 3
N_FOLDS ?= $(or $(N_FOLDS_$(EXP)),5)
SEED ?= 42
# FOLD_SCHEME=tfrecord: the resized sets' 15 TFRecord groups dealt into folds as the public
# notebooks do (seed 42), so CV compares with theirs; empty: this project's assignment
FOLD_SCHEME ?=
# INCLUDE_EXTERNAL=1: external rows get folds too and are validated on (the report scores
# them apart, column `external`); empty: they only train (fold -1)
INCLUDE_EXTERNAL ?=
# PSEUDO_FROM=<stem>: the other CNNs train with pseudo-labelled test rows chosen from
# preds/$(RUN)_<stem> (see "pseudo-labelling" below; PSEUDO_ARGS: deepauc pseudo's flags); empty: off
PSEUDO_FROM ?=
PSEUDO_ARGS ?=
# extra flags for tests and quick runs: demo-data sizes, config overrides for every CNN
DEMO_ARGS ?=
EXTRA_SETS ?=
# SETS_<stem>="--set loss.margin=1.0": overrides for one model of MODELS only (a margin sweep: one
# RUN per value; SETS_<stem> is part of that model's stamp)
EXTRA_META_SETS ?=
# config stem[:stage-1 stem] for every CNN, and the cache sizes they need
MODELS_demo := ce_lite0_64 aucm_lite0_64:ce_lite0_64
SIZES_demo := 64
MODELS_siim := ce_b5_384 aucm_b5_384:ce_b5_384 ce_b3_256 aucm_b3_256:ce_b3_256 ce_b6_512 aucm_b6_512:ce_b6_512
SIZES_siim := 256 384 512
MODELS_smoke := ce_lite0_32 aucm_lite0_32:ce_lite0_32
SIZES_smoke := 32
# 2x T4 on Kaggle (fp16, 16 GB, 9-hour sessions): two models, 8 TTA views (docs/real-data.md)
MODELS_kaggle := ce_b3_256 aucm_b3_256:ce_b3_256 ce_b5_384 aucm_b5_384:ce_b5_384
SIZES_kaggle := 256 384
MODELS ?= $(MODELS_$(EXP))
SIZES ?= $(SIZES_$(EXP))
META ?= meta_mlp

CONFIGS := configs/$(EXP)
# the base files a config may name (`base: _x.yaml`): a change to one redoes what reads it
CONFIG_BASES := $(wildcard $(CONFIGS)/_*.yaml)
TRAIN_TABLE := data/interim/$(RUN)_train.csv
ifeq ($(EXP),smoke)
# the smoke run: a few rows per source of the merged table and of the test set
MERGED_TABLE := data/interim/$(RUN)_merged_train.csv
TEST_CSV := data/interim/$(RUN)/test.csv
SAMPLE_CSV := data/interim/$(RUN)/sample_submission.csv
else
MERGED_TABLE := $(TRAIN_TABLE)
TEST_CSV := $(DATA)/test.csv
SAMPLE_CSV := $(SAMPLE)
endif
FOLDS := folds/$(RUN).csv
CACHE := data/cache/$(EXP)
FOLD_IDS := $(shell seq 0 $$(($(N_FOLDS) - 1)))
# every config-driven stage gets the data locations from here, not from the YAML's defaults
SETS := --set data.train_csv=$(FOLDS) --set data.test_csv=$(TEST_CSV) --set data.cache_dir=$(CACHE) \
  --set n_folds=$(N_FOLDS) $(if $(GPU_MEM),--set train.gpu_memory_gb=$(GPU_MEM)) $(EXTRA_SETS)
STEMS := $(foreach m,$(MODELS),$(firstword $(subst :, ,$(m))))
CACHE_STAMPS := $(foreach s,$(SIZES),$(CACHE)/$(s)/index_$(RUN)_train.csv $(CACHE)/$(s)/index_test.csv)
CNN_PREDS := $(foreach s,$(STEMS),preds/$(RUN)_$(s)/oof.csv)
BLEND_PREDS := $(foreach s,$(STEMS),preds/$(RUN)_$(s)+meta/oof.csv)
# the ensemble's prediction directories: every model of MODELS blended with metadata
MEMBERS ?= $(foreach s,$(STEMS),preds/$(RUN)_$(s)+meta)
comma := ,
space := $(subst ,, )
MEMBER_LIST := [$(subst $(space),$(comma),$(strip $(MEMBERS)))]
SUBMISSION := submissions/$(RUN).csv
REPORT := reports/cv_$(RUN).md

# ---- stamps: each stage group's make variables and input files (docs/pipeline.md) --------------
# make compares file times only, and real data keeps old ones (unzip, /kaggle/input); so each
# group's variables, absolute data roots and a stat listing of its input files go into a stamp
# under stamps/$(RUN)/ that is rewritten only when that content changes, and every stage
# depends on the stamps it reads. They are refreshed when make reads this file, for every goal
# but the ones listed here (the wrappers recurse with the experiment's own variables).
q = '$(subst ','\'',$(1))'
STAMPS := stamps/$(RUN)
STAMP_DATA := $(STAMPS)/train-data
STAMP_TEST := $(STAMPS)/test-tables
STAMP_TEST_IMAGES := $(STAMPS)/test-images
STAMP_CNN := $(STAMPS)/cnn
STAMP_META := $(STAMPS)/meta
STAMP_ENS := $(STAMPS)/ensemble
ALL_STAMPS := $(STAMP_DATA) $(STAMP_TEST) $(STAMP_TEST_IMAGES) $(STAMP_CNN) $(STAMP_META) $(STAMP_ENS)
EXTERNAL_DIRS := $(ISIC2019) $(ISIC2018) $(ISIC2017) $(MALIGNANT)
# the test side of a data folder in either layout, left out of the training stamp whatever
# TEST_IMAGES and SAMPLE say (they have their own stamp)
DATA_TEST_FILES := $(DATA)/jpeg/test $(DATA)/test $(DATA)/test.csv $(DATA)/sample_submission.csv
UPDATE_STAMPS := $(DEEPAUC) stamp --stamp $(STAMP_DATA) --var EXP=$(EXP) --var SEED=$(SEED) --var N_FOLDS=$(N_FOLDS) \
    $(if $(FOLD_SCHEME),--var FOLD_SCHEME=$(FOLD_SCHEME)) $(if $(INCLUDE_EXTERNAL),--var INCLUDE_EXTERNAL=$(INCLUDE_EXTERNAL)) \
    $(if $(NO_EXTERNAL),--var NO_EXTERNAL=$(NO_EXTERNAL)) \
    --path DATA=$(call q,$(DATA)) --path ISIC2019=$(call q,$(ISIC2019)) --path ISIC2018=$(call q,$(ISIC2018)) \
    --path ISIC2017=$(call q,$(ISIC2017)) --path MALIGNANT=$(call q,$(MALIGNANT)) \
    $(foreach s,$(SIZE_ROOTS),--path DATA_$(s)=$(call q,$(DATA_$(s)))) \
    $(foreach p,$(DATA_TEST_FILES) $(EXTERNAL_DIRS) $(foreach s,$(SIZE_ROOTS),$(call images_of,$(DATA_$(s)))),--exclude $(call q,$(p))) \
  --stamp $(STAMP_TEST) --path TEST_TABLE=$(call q,$(DATA)/test.csv) --path SAMPLE=$(call q,$(SAMPLE)) \
  --stamp $(STAMP_TEST_IMAGES) --path TEST_IMAGES=$(call q,$(TEST_IMAGES)) \
    $(foreach s,$(SIZE_ROOTS),--path TEST_IMAGES_$(s)=$(call q,$(call images_of,$(DATA_$(s))))) \
  --stamp $(STAMP_CNN) --var $(call q,EXTRA_SETS=$(EXTRA_SETS)) --var $(call q,SIZES=$(SIZES)) \
    $(if $(strip $(SEEDS)),--var $(call q,SEEDS=$(SEEDS))) \
    $(foreach s,$(STEMS),$(if $(SETS_$(s)),--var $(call q,SETS_$(s)=$(SETS_$(s))))) \
    --var GPU_MEM=$(GPU_MEM)$(if $(PSEUDO_FROM), --var PSEUDO_FROM=$(PSEUDO_FROM) --var $(call q,PSEUDO_ARGS=$(PSEUDO_ARGS))) \
  --stamp $(STAMP_META) --var META=$(META) --var $(call q,EXTRA_META_SETS=$(EXTRA_META_SETS)) \
  --stamp $(STAMP_ENS) --var $(call q,MODELS=$(MODELS)) --var $(call q,MEMBERS=$(MEMBERS)) \
    --var $(call q,SAMPLE_CSV=$(abspath $(SAMPLE_CSV)))
NO_STAMP_GOALS := help venv kaggle-cli demo all smoke clean-smoke clean-demo test test-slow lint \
  format toy study-deps study study-full study-full-pilot study-paper bench gpu-check submit \
  data/demo/train.csv
ifneq ($(filter-out $(NO_STAMP_GOALS),$(or $(MAKECMDGOALS),help)),)
# checked here, not where SAMPLE is set, so that goals which read no data (submit) still run
ifeq ($(filter demo,$(EXP))$(wildcard $(SAMPLE)),)
$(error $(SAMPLE) does not exist (a resized set ships no sample_submission.csv): name the competition's with SAMPLE=path/to/sample_submission.csv)
endif
ifneq ($(shell command -v $(PY)),)
ifneq ($(shell $(UPDATE_STAMPS) >&2 && echo ok),ok)
ifeq ($(findstring n,$(firstword -$(MAKEFLAGS))),n)
$(warning the stamps under $(STAMPS) could not be written (see the line above))
else
$(error the stamps under $(STAMPS) could not be written (see the line above))
endif
endif
endif
endif
# before the environment exists (no $(PY) yet) the stamps are written once it does
$(ALL_STAMPS): | $(STAMP)
	$(UPDATE_STAMPS)
# a fresh read of this file (data just written: TEST_IMAGES looks at the folders again)
stamps: ## refresh stamps/$(RUN)/ (make does it for every pipeline goal)
	@:

.PHONY: stamps help venv kaggle-cli demo all smoke clean-smoke pipeline test test-slow lint format toy study-deps study study-full study-full-pilot study-paper bench gpu-check submit clean-demo
help: ## list the targets and what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# ---- environment --------------------------------------------------------------------------
ifneq ($(STAMP),)
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@
endif
venv: $(STAMP) ## build .venv from requirements.txt

# ---- quality gates ------------------------------------------------------------------------
test: $(STAMP) ## the test suite (what CI runs)
	DEEPAUC_PROGRESS=0 $(PY) -m pytest -q
test-slow: $(STAMP) ## the tests marked slow
	DEEPAUC_PROGRESS=0 $(PY) -m pytest -q -m slow
lint: $(STAMP) ## ruff check, ruff format check, mypy on src/
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench
	$(PY) -m mypy src
format: $(STAMP) ## ruff format and autofix
	$(PY) -m ruff format src tests bench
	$(PY) -m ruff check --fix src tests bench

# ---- the pipeline -------------------------------------------------------------------------
demo: $(STAMP) ## the whole pipeline on the generated demo data (CPU)
	$(MAKE) --no-print-directory pipeline EXP=demo
all: $(STAMP) ## the real competition pipeline: make all DATA=path/to/data
	$(MAKE) --no-print-directory pipeline EXP=siim DATA=$(DATA)
smoke: $(STAMP) ## every stage on a few images per set, 32 px, one short epoch: make smoke DATA=path
	$(MAKE) --no-print-directory pipeline EXP=smoke DATA=$(DATA) N_FOLDS=2
pipeline: $(SUBMISSION) $(REPORT)
	@cat $(REPORT)

# 1. demo data (the real competition data is downloaded instead, see README)
data/demo/train.csv: | $(STAMP)
	$(DEEPAUC) demo-data --out data/demo --seed $(SEED) $(DEMO_ARGS)
	$(if $(filter data/demo,$(DATA)),$(MAKE) --no-print-directory stamps)

$(DATA)/test.csv $(SAMPLE): | $(DATA)/train.csv

# 2. external data merged into one training table
# Without external folders the table is the competition rows (the competition-only route).
$(MERGED_TABLE): $(DATA)/train.csv $(STAMP_DATA)
	$(DEEPAUC) external --train-csv $< \
	  $(if $(NO_EXTERNAL),,$(if $(wildcard $(ISIC2019)),--isic2019-dir $(ISIC2019))) \
	  $(if $(NO_EXTERNAL),,$(if $(wildcard $(ISIC2018)),--isic2018-dir $(ISIC2018))) \
	  $(if $(NO_EXTERNAL),,$(if $(wildcard $(ISIC2017)),--isic2017-dir $(ISIC2017))) \
	  $(if $(NO_EXTERNAL),,$(if $(wildcard $(MALIGNANT)),--malignant-dir $(MALIGNANT))) \
	  --out $@ --report reports/external_$(RUN).md
ifeq ($(EXP),smoke)
$(TRAIN_TABLE): $(MERGED_TABLE) $(DATA)/test.csv $(SAMPLE) $(STAMP_DATA) $(STAMP_TEST)
	$(PY) -m deepauc.data.subset --train-csv $< --test-csv $(DATA)/test.csv --sample $(SAMPLE) \
	  --out-train $@ --out-dir $(dir $(TEST_CSV)) --seed $(SEED)
$(TEST_CSV) $(SAMPLE_CSV): | $(TRAIN_TABLE)
endif

# 3. patient-leak-free triple-stratified folds; near-duplicate images (hashed once into
# $(CACHE)/image_hashes.csv) and the published duplicate pairs share a fold
DUPLICATES_CSV := $(wildcard $(DATA)/ISIC_2020_Training_Duplicates.csv)
$(FOLDS): $(TRAIN_TABLE) $(STAMP_DATA)
	$(DEEPAUC) folds --train-csv $< --out $@ --n-folds $(N_FOLDS) --seed $(SEED) --report reports/folds_$(RUN).md \
	  --image-root $(DATA) --hash-cache $(CACHE)/image_hashes.csv $(if $(DUPLICATES_CSV),--duplicates-csv $(DUPLICATES_CSV))$(if $(FOLD_SCHEME), --scheme $(FOLD_SCHEME))$(if $(INCLUDE_EXTERNAL), --include-external)

# 4. resize cache: one call per table writes every size, so each original is decoded once
TRAIN_INDEXES := $(foreach s,$(SIZES),$(CACHE)/$(s)/index_$(RUN)_train.csv)
TEST_INDEXES := $(foreach s,$(SIZES),$(CACHE)/$(s)/index_test.csv)
SIZE_FLAGS := $(foreach s,$(SIZES),--size $(s))
TRAIN_ROOTS := $(foreach s,$(SIZE_ROOTS),--image-root-for $(s)=$(DATA_$(s)))
TEST_ROOTS := $(foreach s,$(SIZE_ROOTS),--image-root-for $(s)=$(call images_of,$(DATA_$(s))))
$(TRAIN_INDEXES) &: $(TRAIN_TABLE) $(STAMP_DATA)
	$(DEEPAUC) resize --csv $< --image-root $(DATA) $(SIZE_FLAGS) $(TRAIN_ROOTS) --out $(CACHE)
$(TEST_INDEXES) &: $(TEST_CSV) $(STAMP_TEST) $(STAMP_TEST_IMAGES)
	$(DEEPAUC) resize --csv $< --image-root $(TEST_IMAGES) $(SIZE_FLAGS) $(TEST_ROOTS) --out $(CACHE)
# a size outside SIZES, asked for by its index file
$(CACHE)/%/index_$(RUN)_train.csv: $(TRAIN_TABLE) $(STAMP_DATA)
	$(DEEPAUC) resize --csv $< --image-root $(DATA) --size $* --out $(CACHE)
$(CACHE)/%/index_test.csv: $(TEST_CSV) $(STAMP_TEST) $(STAMP_TEST_IMAGES)
	$(DEEPAUC) resize --csv $< --image-root $(TEST_IMAGES) --size $* --out $(CACHE)
.PRECIOUS: $(CACHE)/%/index_$(RUN)_train.csv $(CACHE)/%/index_test.csv

# 5-7. CNN training (stage 1 CE, stage 2 AUC-M from it) and TTA predictions, per model
define CNN_RULES
models/$(RUN)_$(1)/fold%/model.pt: $(CONFIGS)/$(1).yaml $(CONFIG_BASES) $(FOLDS) $(CACHE_STAMPS) $(STAMP_CNN) $(if $(2),models/$(RUN)_$(2)/fold%/model.pt)$(call pseudo_dep,$(1))
	$(GPU_SLOT) $(TRAIN_LAUNCH) train --config $$< --fold $$* $(SETS) $(call RUN_SETS,$(1),$(2)) $(SETS_$(1))$(call pseudo_set,$(1))
	touch $$@  # newer than its inputs, whether trained now or kept because its record matched them
preds/$(RUN)_$(1)/oof.csv: $(CONFIGS)/$(1).yaml $(CONFIG_BASES) $(FOLDS) $(CACHE_STAMPS) $(STAMP_CNN) $(foreach k,$(FOLD_IDS),models/$(RUN)_$(1)/fold$(k)/model.pt)
	$(GPU_SLOT) $(DEEPAUC) predict --config $$< $(SETS) $(call RUN_SETS,$(1),$(2)) $(SETS_$(1))$(call pseudo_set,$(1))
preds/$(RUN)_$(1)+meta/oof.csv: preds/$(RUN)_$(1)/oof.csv preds/$(RUN)_$(META)/oof.csv
	$(DEEPAUC) blend --cnn preds/$(RUN)_$(1) --meta preds/$(RUN)_$(META) --out preds/$(RUN)_$(1)+meta
endef
# SEEDS="0 1": each CNN trains and predicts once per seed, in its own run dir <name>_s<seed>
# (stage 2 from the same seed's stage 1), and preds/<name> is their mean (deepauc average),
# one ensemble member. Empty: one run per model, with the YAML's seed.
SEED_SETS = --set name=$(RUN)_$(1)_s$(3) --set train.seed=$(3) $(if $(2),--set model.init_from=models/$(RUN)_$(2)_s$(3))
define SEEDED_CNN_RULES
models/$(RUN)_$(1)_s$(3)/fold%/model.pt: $(CONFIGS)/$(1).yaml $(CONFIG_BASES) $(FOLDS) $(CACHE_STAMPS) $(STAMP_CNN) $(if $(2),models/$(RUN)_$(2)_s$(3)/fold%/model.pt)$(call pseudo_dep,$(1))
	$(GPU_SLOT) $(TRAIN_LAUNCH) train --config $$< --fold $$* $(SETS) $(SETS_$(1)) $(call SEED_SETS,$(1),$(2),$(3))$(call pseudo_set,$(1))
	touch $$@  # newer than its inputs, whether trained now or kept because its record matched them
preds/$(RUN)_$(1)_s$(3)/oof.csv: $(CONFIGS)/$(1).yaml $(CONFIG_BASES) $(FOLDS) $(CACHE_STAMPS) $(STAMP_CNN) $(foreach k,$(FOLD_IDS),models/$(RUN)_$(1)_s$(3)/fold$(k)/model.pt)
	$(GPU_SLOT) $(DEEPAUC) predict --config $$< $(SETS) $(SETS_$(1)) $(call SEED_SETS,$(1),$(2),$(3))$(call pseudo_set,$(1))
endef
define SEED_MEAN_RULES
preds/$(RUN)_$(1)/oof.csv: $(foreach s,$(SEEDS),preds/$(RUN)_$(1)_s$(s)/oof.csv)
	$(DEEPAUC) average --out preds/$(RUN)_$(1)-notta --preds $(foreach s,$(SEEDS),preds/$(RUN)_$(1)_s$(s)-notta)
	$(DEEPAUC) average --out preds/$(RUN)_$(1) --preds $(foreach s,$(SEEDS),preds/$(RUN)_$(1)_s$(s))
preds/$(RUN)_$(1)+meta/oof.csv: preds/$(RUN)_$(1)/oof.csv preds/$(RUN)_$(META)/oof.csv
	$(DEEPAUC) blend --cnn preds/$(RUN)_$(1) --meta preds/$(RUN)_$(META) --out preds/$(RUN)_$(1)+meta
endef
# a RUN's runs are named by it: name (and a stage 2's init_from) follow RUN, not the YAML
RUN_SETS = $(if $(filter-out $(EXP),$(RUN)),--set name=$(RUN)_$(1) $(if $(2),--set model.init_from=models/$(RUN)_$(2)))
model_stem = $(firstword $(subst :, ,$(1)))
model_stage1 = $(word 2,$(subst :, ,$(1)))
# ---- pseudo-labelling (optional, PSEUDO_FROM=<stem>; docs/pipeline.md "Pseudo-labelling") ----
# fold k of every other CNN also trains on the test images fold k's model of <stem> ranks at
# the top (1) or bottom (0); not <stem> itself nor its stage 1: their runs made those
# predictions (a stage 2 may learn from its own stage 1's). Empty: these expand to nothing.
PSEUDO_TABLE = data/interim/$(RUN)_pseudo_$(PSEUDO_FROM).csv
PSEUDO_SKIP = $(PSEUDO_FROM) $(foreach m,$(MODELS),$(if $(filter $(PSEUDO_FROM),$(call model_stem,$(m))),$(call model_stage1,$(m))))
pseudo_on = $(if $(PSEUDO_FROM),$(if $(filter $(1),$(PSEUDO_SKIP)),,on))
pseudo_dep = $(if $(call pseudo_on,$(1)), $(PSEUDO_TABLE))
pseudo_set = $(if $(call pseudo_on,$(1)), --set data.pseudo_csv=$(PSEUDO_TABLE))
ifneq ($(PSEUDO_FROM),)
$(PSEUDO_TABLE): preds/$(RUN)_$(PSEUDO_FROM)/oof.csv
	$(DEEPAUC) pseudo --preds preds/$(RUN)_$(PSEUDO_FROM) --out $@ $(PSEUDO_ARGS)
endif
ifeq ($(strip $(SEEDS)),)
$(foreach m,$(MODELS),$(eval $(call CNN_RULES,$(call model_stem,$(m)),$(call model_stage1,$(m)))))
else
$(foreach m,$(MODELS),$(foreach s,$(SEEDS),$(eval $(call SEEDED_CNN_RULES,$(call model_stem,$(m)),$(call model_stage1,$(m)),$(s)))))
$(foreach m,$(MODELS),$(eval $(call SEED_MEAN_RULES,$(call model_stem,$(m)))))
endif

# 8. metadata model
preds/$(RUN)_$(META)/oof.csv: $(CONFIGS)/$(META).yaml $(CONFIG_BASES) $(FOLDS) $(STAMP_META) $(STAMP_TEST) $(STAMP_TEST_IMAGES)
	$(DEEPAUC) meta --config $< --set train_csv=$(FOLDS) --set test_csv=$(TEST_CSV) $(EXTRA_META_SETS) \
	  --set image_root=$(DATA) --set test_image_root=$(TEST_IMAGES) $(call RUN_SETS,$(META))

# 9-10. ensemble into the submission
$(SUBMISSION): $(CONFIGS)/ensemble.yaml $(CONFIG_BASES) $(STAMP_ENS) $(STAMP_TEST) $(BLEND_PREDS) $(CNN_PREDS) $(addsuffix /oof.csv,$(MEMBERS))
	$(DEEPAUC) ensemble --config $< --set sample_submission=$(SAMPLE_CSV) --set out=$@ \
	  --set 'members=$(MEMBER_LIST)' $(call RUN_SETS,ensemble)
	$(DEEPAUC) validate-submission --sample $(SAMPLE_CSV) $@

# 11. cross-validation report; each model written `stage2:stage1` whose stage 1 is a model too
# is compared with it on the same OOF rows (--compare A B reports B - A: what stage 2 adds)
stage1_of = $(word 2,$(subst :, ,$(1)))
COMPARE := $(foreach m,$(MODELS),$(if $(filter $(call stage1_of,$(m)),$(STEMS)),\
  --compare preds/$(RUN)_$(call stage1_of,$(m)) preds/$(RUN)_$(firstword $(subst :, ,$(m)))))
$(REPORT): $(SUBMISSION)
	$(DEEPAUC) report --title "CV report ($(RUN))" --out $@ --folds $(FOLDS) --preds \
	  $(foreach s,$(STEMS),preds/$(RUN)_$(s)-notta preds/$(RUN)_$(s) preds/$(RUN)_$(s)+meta) \
	  preds/$(RUN)_$(META) preds/$(RUN)_ensemble $(COMPARE)

KAGGLE ?= $(if $(wildcard $(VENV)/bin/kaggle),$(VENV)/bin/kaggle,kaggle)
kaggle-cli: $(STAMP) ## install the Kaggle CLI into .venv (for make submit)
	$(PY) -m pip install -q 'kaggle==2.2.5'
# no data variables to repeat: the stamps of the run that made it say which sample to check
submit: ## upload the submission with the Kaggle CLI (make kaggle-cli first): make submit EXP=siim
	$(DEEPAUC) stamp --check $(SUBMISSION) $(ALL_STAMPS)
	$(DEEPAUC) validate-submission --sample "$$($(DEEPAUC) stamp --print SAMPLE_CSV $(ALL_STAMPS))" $(SUBMISSION)
	$(KAGGLE) competitions submit -c siim-isic-melanoma-classification -f $(SUBMISSION) -m "deepauc $(EXP)"

clean-demo: ## delete every demo output
	rm -rf data/demo data/interim/demo_* data/cache/demo folds/demo.csv models/demo_* preds/demo_* submissions/demo.csv reports/cv_demo* stamps/demo
clean-smoke: ## delete every smoke-run output (not the data)
	rm -rf data/interim/smoke* data/cache/smoke folds/smoke.csv models/smoke_* preds/smoke_* submissions/smoke.csv reports/*_smoke* stamps/smoke

# ---- studies and benchmarks ---------------------------------------------------------------
# sigmoid scores (the default); raw logits; the reference's BSN on logits, whose class-mean
# gap is at most 0.105 here, so m = 0.1. lr per score from the clean panels of seed 0.
toy: $(STAMP) ## the paper's Figure-1 toy study, three ways of scoring
	$(DEEPAUC) toy --out-dir reports --quiet
	$(DEEPAUC) toy --out-dir reports --quiet --score logit --lr 0.1
	$(DEEPAUC) toy --out-dir reports --quiet --score bsn --lr 1 --margin 0.1
# the study's data: ELPV and LibAUC from PyPI, Fashion-MNIST from Debian (needs root or sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist
study-deps: $(STAMP) ## install the study's data sets and LibAUC
	$(PY) -m pip install -q -r requirements-study.txt
	test -d $(FASHION_MNIST) || { $$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq dataset-fashion-mnist; } \
	  || echo "Fashion-MNIST could not be installed (apt-get install dataset-fashion-mnist); the study will stop on it"
study: study-deps ## the benchmark study on digits, under an hour (configs/study/default.yaml)
	$(DEEPAUC) study --config configs/study/default.yaml
study-full: study-deps ## + Fashion-MNIST and ELPV, about 9 h on 2 cores, resumable (configs/study/full.yaml)
	$(DEEPAUC) study --config configs/study/full.yaml
# 2 seeds, one tuning seed, a tenth of the epochs, its own report and runs: checks the full
# study end to end (its numbers are not results)
study-full-pilot: study-deps ## study-full with 2 seeds and 1/10 of the epochs (a check)
	$(DEEPAUC) study --config configs/study/full.yaml --set name=study_full_pilot \
	  --set runs=reports/study_full_pilot_runs.csv \
	  --set 'seeds=[0, 1]' --set tune_seeds_limit=1 --set epochs_scale=0.1
study-paper: study-deps ## the paper's settings and data sets, for a GPU (configs/study/paper.yaml)
	$(DEEPAUC) study --config configs/study/paper.yaml
bench: $(STAMP) ## the performance benchmarks (bench/README.md)
	$(PY) -m pip install -q -r requirements-study.txt
	$(PY) bench/run.py
# the prepared device check; DEVICE=cpu runs the same sections on tiny sizes (a dry run).
# It builds no venv: PY= if given, else .venv's python if built, else python3 (the
# platform's torch); the report goes to $(OUT) when set (the device machine's output folder)
DEVICE ?= cuda
GPU_CHECK_PY := $(if $(STAMP),$(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,$(PYTHON)),$(PY))
GPU_CHECK_OUT ?= $(or $(OUT),bench/results)/gpu-check-$(DEVICE)-$(shell date +%Y-%m-%d).md
gpu-check: ## the device check report (bench/README.md); DEVICE=cpu: tiny dry run
	DEEPAUC_PROGRESS=0 $(GPU_CHECK_PY) bench/gpu_check.py --device $(DEVICE) --out $(GPU_CHECK_OUT)
