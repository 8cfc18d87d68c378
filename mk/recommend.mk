# Recommend service (services/recommend) and its bi-encoder (libs/textpulse/recsys).
# Included by the main Makefile (-include mk/*.mk). Settings: TEXTPULSE_RECOMMEND_*, TEXTPULSE_KAFKA_*,
# TEXTPULSE_MODEL_REPO (.cache/model-repo), TEXTPULSE_TRITON_URL (unset: in-process), TEXTPULSE_DATA_DIR.

RECOMMEND_PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
RECOMMEND_ENV := PYTHONPATH=libs:.$(if $(PYTHONPATH),:$(PYTHONPATH)) HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The shipped recipe is the options' defaults (1,500 pairs, in-batch negatives, 1 epoch). Every pair with hard
# negatives, resumable (rerun continues from DIR/checkpoint.pt): RECOMMEND_TRAIN_ARGS="--pairs 0 --epochs 3
# --hard-negatives 1 --out-dir DIR" (hours on 2 CPU cores; services/recommend/README.md has its figures).
RECOMMEND_TRAIN_ARGS ?=
BENCH_RECOMMEND_ARGS ?=

.PHONY: recommend-run recommend-model recommend-ranker test-recommend bench-recommend

recommend-run: ## Run the recommend service (items + user.interactions → recs.scores, API on 127.0.0.1:8086)
	$(RECOMMEND_ENV) $(RECOMMEND_PY) -m services.recommend.app

recommend-model: ## Fine-tune the recommend bi-encoder on MovieLens, train its LambdaRank ranker (CPU, minutes); export both to the model repo
	$(RECOMMEND_ENV) $(RECOMMEND_PY) -m textpulse.recsys.train $(RECOMMEND_TRAIN_ARGS)

recommend-ranker: ## Retrain only the LambdaRank ranker of the latest recommend export (into its ranker/ folder)
	$(RECOMMEND_ENV) $(RECOMMEND_PY) -m textpulse.recsys.train --ranker-only $(RECOMMEND_TRAIN_ARGS)

test-recommend: ## Unit + in-memory tests of recommend, then its real-Kafka integration test
	$(RECOMMEND_PY) -m pytest -q libs/textpulse/recsys tests/inmemory/test_recommend_inmemory.py
	$(RECOMMEND_PY) -m pytest -q -m kafka tests/integration/test_recommend_kafka.py

bench-recommend: ## Recall@10/nDCG@10 of popular, item-kNN, EASE, text, hybrid, LambdaRank ranker + cold-start table; HTTP p99, 10k items, real server + Kafka
	@test -d .cache/model-repo/recommend || $(MAKE) recommend-model
	$(RECOMMEND_ENV) $(RECOMMEND_PY) -m bench.bench_recommend $(BENCH_RECOMMEND_ARGS)
