# tally — the two commands a newcomer needs are `make run` and `make test`.
GO        ?= go
BIN       ?= bin/tally
# The fuzz targets run briefly in `make test`, bounded by an execution count
# rather than a duration: a duration that runs out while the engine is
# minimising a new input is reported as a failure ("context deadline
# exceeded"). `make fuzz FUZZTIME=10m` for a long run.
FUZZTIME  ?= 200000x
FUZZ_TARGETS := events:FuzzParseRequest events:FuzzDecodeEvent events:FuzzParseAmount events:FuzzParseFast events:FuzzEncodeEvent events:FuzzDecodeEventData enforcer:FuzzRestoreSnapshot enforcer:FuzzAckSeq

.PHONY: all build run test test-gc test-long fuzz bench bench-core bench-recovery bench-table bench-instructions profile profile-e2e vet clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tally

## run: tally with its embedded NATS server (data in ./tally-data, NATS on 127.0.0.1:4222, metrics on :9464)
run: build
	./$(BIN) serve

## test: vet, the whole suite with -race (cluster and fault tests included), the core's state tests again with the
## collector running all the time and clobbering what it frees (flat reservations, enforcer/flat.go, must point only
## at what stays reachable without them), then short fuzz runs
test: vet
	$(GO) test -race -count=1 -timeout 30m ./...
	$(MAKE) test-gc RAPID_CHECKS=300
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

RAPID_CHECKS ?= 300
test-gc:
	GODEBUG=clobberfree=1 GOGC=5 $(GO) test -count=1 ./enforcer -run 'TestModel$$|TestFlatReservations|TestRule|TestPattern|Snapshot|Clone' -rapid.checks=$(RAPID_CHECKS)

vet:
	$(GO) vet ./...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test ./$$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME); \
	done

## test-long: soak runs (longer model checks and fuzzing)
test-long:
	$(GO) test -race -count=1 -timeout 60m ./enforcer -run Model -rapid.checks=2000
	$(MAKE) test-gc RAPID_CHECKS=3000
	$(MAKE) fuzz FUZZTIME=5m

## bench: core, codec and end-to-end benchmarks (figures go to BENCHMARKS.md)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./events ./enforcer

## bench-recovery: recovery time of a 1 000 000-event partition (full replay vs snapshot + tail)
bench-recovery:
	TALLY_RECOVERY_EVENTS=1000000 $(GO) test -count=1 -timeout 30m -run TestRecoveryTime -v ./enforcer

## bench-table: every row of BENCHMARKS.md's "Where tally stands", the padded B1 and the contract floor after it, one after the other (~15 min);
## each command's report goes to $(BENCH_OUT)/<row>.txt. Run it on an otherwise idle machine.
BENCH_OUT ?= bench-out
bench-table: build
	@mkdir -p $(BENCH_OUT)
	@set -e; row() { name=$$1; shift; echo "$$name: $$*"; "$$@" > $(BENCH_OUT)/$$name.txt 2>&1; }; \
	row interval      ./$(BIN) bench --embedded --sync interval --baseline --duration 10s --warmup 20s; \
	row interval-half ./$(BIN) bench --embedded --sync interval --rate 7000 --baseline --b1-contract --duration 10s --warmup 20s; \
	row interval-bytes ./$(BIN) bench --embedded --sync interval --baseline --b1-append-bytes 1400 --b1-answer-bytes 1400 --b1-contract --duration 10s --warmup 10s; \
	row always        ./$(BIN) bench --embedded --sync always --baseline --duration 10s --warmup 10s; \
	row always-half   ./$(BIN) bench --embedded --sync always --rate 4000 --baseline --duration 10s --warmup 10s; \
	row always-1500   ./$(BIN) bench --embedded --sync always --rate 1500 --baseline --duration 10s --warmup 10s; \
	row always-server ./$(BIN) bench --embedded --sync always --group-fsync off --baseline --duration 10s --warmup 10s; \
	row single-root   ./$(BIN) bench --embedded --sync interval --single-root --baseline --duration 8s --warmup 5s; \
	row r3            ./$(BIN) bench --cluster3 --baseline --duration 8s; \
	row r3-half       ./$(BIN) bench --cluster3 --rate 650 --baseline --duration 8s; \
	row r3-p1         ./$(BIN) bench --cluster3 --partitions 1 --baseline --duration 8s; \
	row core          $(GO) test -count=1 -run '^$$' -bench 'ReserveDecideApply|ReserveCommitDecideApply' -benchmem -benchtime=200000x -count=3 ./enforcer; \
	row recovery      env TALLY_RECOVERY_EVENTS=300000 $(GO) test -count=1 -run TestRecoveryTime -v ./enforcer
	@echo "reports in $(BENCH_OUT)/"

## bench-core: issue 2's measure, CORE_ROUNDS times in turn: this machine's JetStream append rate (BenchmarkJetStreamAppend),
## then a reserve's Decide + Apply on one core (-cpu 1: the collector shares it) and beside the collector (-cpu 2);
## each reserve figure with its rate and its ratio to the append rate of the same round. Run it on an otherwise idle machine.
## (A pause after each append run lets the kernel write the stream's files back before the core is timed. The -cpu 1 run
## that follows is still often slower than in runs of the core alone; BENCHMARKS.md, sixteenth series.)
CORE_ROUNDS ?= 5
bench-core:
	@mkdir -p $(BENCH_OUT)
	$(GO) test -c -o $(BENCH_OUT)/enforcer.test ./enforcer
	@cd enforcer && for i in $$(seq $(CORE_ROUNDS)); do \
		../$(BENCH_OUT)/enforcer.test -test.run '^$$' -test.bench 'JetStreamAppend$$' -test.benchtime 200000x | grep '^Benchmark'; \
		sync; sleep 3; \
		for c in 1 2; do ../$(BENCH_OUT)/enforcer.test -test.run '^$$' -test.cpu $$c -test.bench 'ReserveDecideApply/prehashed$$' \
			-test.benchtime 200000x -test.benchmem | grep '^Benchmark'; done; \
	done | awk '/JetStreamAppend/ { a = $$(NF-1); printf "round %d: JetStream %.0f appends/s\n", ++r, a; next } \
		{ printf "  %-44s %6d ns/op  %7.0f reserves/s  %.2f x JetStream\n", $$1, $$3, 1e9 / $$3, 1e9 / $$3 / a }'

## bench-instructions: instructions per op of the core benchmarks, counted by callgrind (needs valgrind; not part of
## make test). Decide + Apply only, without the collector (GOGC=off), on one thread, without preemption signals
## (callgrind can trip on them); INSTR_OPS ops. On an idle machine repeated runs agree within 0.2 %, where ns/op
## moves with the host's load; under load the runtime's other threads run inside the window and add to the count.
INSTR_OPS ?= 20000
bench-instructions:
	@command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null || { echo "bench-instructions needs valgrind (apt-get install valgrind)"; exit 1; }
	@mkdir -p $(BENCH_OUT)
	$(GO) test -c -o $(BENCH_OUT)/enforcer.test ./enforcer
	@set -e; for b in 'ReserveDecideApply/prehashed$$' 'ReserveCommitDecideApply/prehashed$$'; do \
		out=$(BENCH_OUT)/callgrind.$$(echo $$b | tr -dc 'A-Za-z').out; \
		(cd enforcer && GOGC=off GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file=../$$out \
			--toggle-collect='*enforcer.(*State).Decide' --toggle-collect='*enforcer.(*State).Apply' \
			../$(BENCH_OUT)/enforcer.test -test.run '^$$' -test.bench "$$b" -test.benchtime $(INSTR_OPS)x > ../$$out.log 2>&1) || { tail -20 $$out.log; exit 1; }; \
		total=$$(callgrind_annotate $$out | awk '/PROGRAM TOTALS/ {gsub(",", "", $$1); print $$1}'); \
		echo "$$b: $$((total / $(INSTR_OPS))) instructions per op ($$out)"; \
	done

## profile-e2e: profile tally end to end (embedded server, enforcer and clients in one process)
profile-e2e: build
	./$(BIN) bench --embedded --sync interval --duration 20s --cpuprofile cpu-e2e.prof
	$(GO) tool pprof -top -nodecount 30 $(BIN) cpu-e2e.prof

profile:
	$(GO) test -run '^$$' -bench ReserveDecideApply -benchtime 200000x -cpuprofile cpu.prof ./enforcer
	$(GO) tool pprof -top -nodecount 30 enforcer.test cpu.prof

clean:
	rm -rf bin bench-out cpu.prof cpu-e2e.prof enforcer.test
