# pgolf build. `make` builds build/pgolf (CPU backend always; CUDA backend too when nvcc is found,
# unless CUDA=0). `make test` installs missing Debian packages (as root), builds and runs every test.
# `make demo` runs the main job on the embedded default dataset.

CC      ?= gcc
ARCH    ?= -march=x86-64-v3
OPT     ?= -O2
WERROR  ?= $(if $(CI),-Werror,)
BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIB := /usr/lib/x86_64-linux-gnu/openblas-openmp
CFLAGS  += -std=c11 $(OPT) $(ARCH) -g -fopenmp -Wall -Wextra $(WERROR) -D_GNU_SOURCE -Isrc -I$(BLAS_INC) -MMD -MP
LDLIBS  += -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -lz -lzstd -llzma -lbrotlienc -lbrotlidec -lm -fopenmp

# ---- MPI (optional): data parallelism across processes under mpirun (src/dist.c) ----
MPICC_FOUND := $(shell command -v mpicc 2>/dev/null)
MPI ?= $(if $(MPICC_FOUND),1,0)
ifeq ($(MPI),1)
MPI_CFLAGS ?= $(shell mpicc --showme:compile 2>/dev/null || pkg-config --cflags mpich 2>/dev/null)
MPI_LIBS   ?= $(shell mpicc --showme:link 2>/dev/null || pkg-config --libs mpich 2>/dev/null)
CFLAGS  += -DPGOLF_MPI=1 $(MPI_CFLAGS)
LDLIBS  += $(MPI_LIBS)
endif

# ---- CUDA (optional) ----
NVCC_FOUND := $(shell command -v nvcc 2>/dev/null || ( [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc ))
CUDA ?= $(if $(NVCC_FOUND),1,0)
NVCC ?= $(NVCC_FOUND)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
NVCCFLAGS ?= -O3 -std=c++17 -Isrc -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=compute_80 \
             --expt-relaxed-constexpr -Xcompiler -Wall,-Wextra$(if $(CI),$(comma)-Werror,) $(if $(CI),-Werror all-warnings,) -MMD -MP
comma := ,

BUILD   := build
SRC_C   := $(wildcard src/*.c src/cpu/*.c)
# NCCL (src/cuda/nccl.cu) with the CUDA backend when nccl.h is found. Training uses it only under
# MPI (the unique id goes through MPI); without MPI the GPU tests still run it on one rank.
NCCL_H  := $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h)
NCCL    ?= $(if $(and $(filter 1,$(CUDA)),$(NCCL_H),$(wildcard src/cuda/ops_cuda.cu)),1,0)
SRC_CU  := $(if $(filter 1,$(CUDA)),$(filter-out $(if $(filter 1,$(NCCL)),,src/cuda/nccl.cu),$(wildcard src/cuda/*.cu)),)
OBJ_C   := $(patsubst %.c,$(BUILD)/%.o,$(SRC_C))
OBJ_CU  := $(patsubst %.cu,$(BUILD)/%.o,$(SRC_CU))
LIB_OBJ := $(filter-out $(BUILD)/src/main.o,$(OBJ_C)) $(OBJ_CU)
TEST_C  := $(wildcard tests/*.c)
TEST_OBJ:= $(patsubst %.c,$(BUILD)/%.o,$(TEST_C))

ifeq ($(CUDA),1)
CFLAGS  += $(if $(wildcard src/cuda/ops_cuda.cu),-DPGOLF_CUDA=1,) -I$(CUDA_HOME)/include
LDLIBS  += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib64/stubs -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublasLt -lcublas -lstdc++
ifeq ($(NCCL),1)
CFLAGS  += -DPGOLF_NCCL=1
NVCCFLAGS += -DPGOLF_NCCL=1 $(MPI_CFLAGS)
LDLIBS  += -lnccl
endif
endif

.PHONY: all test demo clean deps bench bench-tokenize
all: $(BUILD)/pgolf $(BUILD)/pgolf_tests

$(BUILD)/pgolf: $(OBJ_C) $(OBJ_CU) $(BUILD)/src_bundle.o
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/pgolf_tests: $(LIB_OBJ) $(TEST_OBJ) $(BUILD)/src_bundle.o
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

# The embedded source bundle counted as "code bytes" in the artifact (see src/artifact.c,
# docs/artifact.md): an xz-compressed tar of these files, regenerated whenever one changes.
BUNDLE_SRC := Makefile scripts/mkbundle.c $(sort $(wildcard src/*.c src/*.h src/cpu/*.c src/cpu/*.h src/cuda/*.cu src/cuda/*.cuh src/cuda/*.h))
$(BUILD)/mkbundle: scripts/mkbundle.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -Wall -Wextra $(WERROR) -D_GNU_SOURCE -o $@ $< -llzma

$(BUILD)/src_bundle.c: $(BUILD)/mkbundle $(BUNDLE_SRC)
	$(BUILD)/mkbundle $@ $(BUNDLE_SRC)

$(BUILD)/src_bundle.o: $(BUILD)/src_bundle.c
	$(CC) $(CFLAGS) -c -o $@ $<

deps:
	@bash scripts/setup.sh

test: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash tests/run.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh

bench: deps all
	@BUILD=$(BUILD) bash bench/run_cpu.sh

bench-tokenize: deps all
	@BUILD=$(BUILD) bash bench/run_cpu.sh tokenize

clean:
	rm -rf $(BUILD)

# ---- fuzzing (not part of all/test; docs/fuzzing.md) ----
# `make fuzz` builds $(FUZZ_BUILD)/fuzz_* (libFuzzer + ASan + UBSan, clang-14) and gen_seeds;
# `make fuzz-run FUZZ_SECONDS=N [FUZZ_TARGETS="spm artifact"]` runs each target N seconds from its seeds.
FUZZ_CC      ?= clang-14
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
# the targets: every fuzz/fuzz_<target>.c but the support code (fuzz/targets.sh)
FUZZ_TARGETS ?= $(shell bash fuzz/targets.sh)
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -std=c11 -g -O1 -Wall -Wextra $(WERROR) -Wno-unknown-pragmas -D_GNU_SOURCE -Isrc -Ifuzz -I$(BLAS_INC) -MMD -MP
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/fz/%.o,$(addprefix src/,common.c json.c config.c codec.c quant.c statedict.c \
                artifact.c model.c eval.c checkpoint.c data.c spm.c dist.c runlog.c) fuzz/fuzz_support.c)
FUZZ_LIBS    := -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -lz -lzstd -llzma -lbrotlienc -lbrotlidec -lm -lpthread
.PHONY: fuzz fuzz-run
fuzz: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%) $(FUZZ_BUILD)/gen_seeds
$(FUZZ_BUILD)/fz/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(FUZZ_SAN) -c -o $@ $<
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/fz/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(FUZZ_LIBS)
$(FUZZ_BUILD)/gen_seeds: $(FUZZ_BUILD)/fz/fuzz/gen_seeds.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(FUZZ_LIBS)
fuzz-run: fuzz
	@FUZZ_BUILD=$(FUZZ_BUILD) bash fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)
-include $(wildcard $(FUZZ_BUILD)/fz/src/*.d $(FUZZ_BUILD)/fz/fuzz/*.d)

-include $(OBJ_C:.o=.d) $(OBJ_CU:.o=.d) $(TEST_OBJ:.o=.d)
