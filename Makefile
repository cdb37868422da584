# The two commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench model clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build; the constraints file keeps every later install on it
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/recon demo -o demo_out

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,bench]"
	$(BIN)/python -m pip install --quiet --no-deps dynamic-network-architectures==0.4.4
	$(BIN)/python -m benchmarks

# the shipped model from scratch: 4000 steps on phantoms (about 1.5 h on an AMD EPYC, 2.3-2.5 h on a Xeon,
# 2 cores), 1200 steps of fine-tuning with hip replacements (about 50 min on the Xeon), 1000 more on the
# revised pelvis (about 40 min), 1000 more with edge labels (about 40 min), 1000 more with the coccyx, posterior
# ilium and tight crops (about 40 min), two of 1200 on the iliac fossa and the auricular sacrum (about 37 min
# each), the last averaged with the fifth, then from that average 1200 on a faint sacral apex and 1200 more
# adding alar voids (about 33 min each on the EPYC), 600 more from that on raised iliac crests (about 14 min),
# the last two averaged, then its measured accuracy
model: setup
	rm -rf models/bone3mm build/bone3mm_base build/bone3mm_implants build/bone3mm_pelvis build/bone3mm_edges \
		build/bone3mm_crops build/bone3mm_fossa build/bone3mm_fossa_again build/bone3mm_average \
		build/bone3mm_faint_apex build/bone3mm_marrow build/bone3mm_iliac
	$(BIN)/recon train -o build/bone3mm_base --steps 4000
	$(BIN)/recon train -o build/bone3mm_implants --config recon/data/training_hip_implants.json --init build/bone3mm_base
	$(BIN)/recon train -o build/bone3mm_pelvis --config recon/data/training_pelvis_anatomy.json --init build/bone3mm_implants
	$(BIN)/recon train -o build/bone3mm_edges --config recon/data/training_bone_edges.json --init build/bone3mm_pelvis
	$(BIN)/recon train -o build/bone3mm_crops --config recon/data/training_sacrum_tight_crops.json --init build/bone3mm_edges
	$(BIN)/recon train -o build/bone3mm_fossa --config recon/data/training_iliac_fossa.json --init build/bone3mm_crops
	$(BIN)/recon train -o build/bone3mm_fossa_again --config recon/data/training_iliac_fossa.json --seed 20 \
		--init build/bone3mm_fossa
	$(BIN)/recon average -o build/bone3mm_average build/bone3mm_fossa_again build/bone3mm_crops
	$(BIN)/recon train -o build/bone3mm_faint_apex --config recon/data/training_faint_sacral_apex.json \
		--init build/bone3mm_average
	$(BIN)/recon train -o build/bone3mm_marrow --config recon/data/training_sacral_marrow.json \
		--init build/bone3mm_faint_apex
	$(BIN)/recon train -o build/bone3mm_iliac --config recon/data/training_iliac_height.json --init build/bone3mm_marrow
	$(BIN)/recon average -o models/bone3mm build/bone3mm_marrow build/bone3mm_iliac
	$(BIN)/python -m recon.segmentation.accuracy models/bone3mm

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache .hypothesis
