"""Markdown tables of each benchmark's results, for :mod:`benchmarks.report`."""

from __future__ import annotations

import numpy as np


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join("n/a" if c is None else str(c) for c in row) + " |"
              for row in rows]
    return lines


def _values(summary):
    return ", ".join(f"{v:g}" for v in summary["values"])


def _quiet_median(s):
    return "n/a" if not s or s["median"] is None else f"{s['median']:g} ({len(s['values'])})"


def _ratio(r):
    if "all" not in r:  # results written before quiet pairs were recorded
        return f"{r['median']:g}"
    text = f"{r['all']['median']:g}"
    quiet = r.get("quiet")
    if quiet and len(quiet["values"]) < len(r["all"]["values"]):
        text += f" (quiet: {quiet['median']:g})"
    return text


def throughput(res):
    lines = [f"Median of {res['repeats']} timed repetitions after {res['warmup_runs']} warm-up "
             "run(s); images/s counts every image forwarded (3 per triplet for the offline "
             "and seed variants). Ratios are medians of per-repetition ratios (each pair "
             "measured in the same round). Compiled steps are timed with `train_on_batch` on one "
             "in-memory batch: the step `fit` runs per batch, without input pipeline or "
             "per-call set-up. On a shared machine another process holding one of the two "
             "cores halves the compiled steps' speed, so each repetition also records the CPU "
             "time other processes used meanwhile (/proc/stat minus this process); "
             f"repetitions with less than {res.get('quiet_cores', 0.2)} cores of it are "
             "'quiet', and the targets use the quiet pairs when there are at least 3.", ""]
    for c in res["configs"]:
        shape = "x".join(map(str, c["input_shape"]))
        lines += [f"**{c['encoder']} at {shape}**, batch {c['batch']}, "
                  f"{c['steps_per_repetition']} compiled steps or "
                  f"{c['eager_triplets_per_repetition']} eager triplets per repetition:", ""]
        ips, quiet = c["images_per_second"], c.get("images_per_second_quiet", {})
        foreign = c.get("foreign_cores", {})
        rows = [[n, f"{s['median']:g}",
                 _quiet_median(quiet.get(n)), _values(s),
                 ", ".join("?" if f is None else f"{f:g}" for f in foreign.get(n, []))]
                for n, s in ips.items()]
        lines += _table(["variant", "images/s, median (all)", "median (quiet reps, n)",
                         "repetitions", "other processes' load per repetition (cores)"], rows)
        lines.append("")
        rows = [[loss] + [_ratio(r[f"vs_{o}"]) for o in
                          ("cross_entropy", "seed_eager_loop", "offline_triplet")]
                for loss, r in c["ratios"].items()]
        lines += _table(["in-batch loss", "/ cross-entropy", "/ seed eager loop",
                         "/ offline triplet"], rows)
        lines += ["", "Ratios: median over all repetitions; in brackets over the quiet pairs, "
                  "where some repetitions were not quiet and at least 3 were."]
        if c.get("valid_triplets_per_batch"):
            lines += ["", f"One in-batch step scores {c['valid_triplets_per_batch']} valid "
                      "triplets (batch-all) from the batch's single forward pass; the seed's "
                      "loop scores one triplet per three forward passes."]
        lines.append("")
    return lines


def input_pipeline(res):
    lines = [f"`{res['encoder']}` at {'x'.join(map(str, res['input_shape']))}, loss "
             f"`{res['loss']}`, {res['n_images']} Fashion-MNIST images, batch {res['batch']}, "
             f"{res['steps_per_epoch']} steps per epoch; median of {res['repeats']} epochs "
             "per source after a warm-up epoch, sources alternating.", ""]
    ratios = res["ratio_to_memory"]
    alone = res.get("pipeline_alone_images_per_second", {})
    rows = [[name, f"{s['median']:g}", _values(s),
             ratios[name]["median"] if name in ratios else "1 (reference)",
             alone[name]["median"] if name in alone else None]
            for name, s in res["images_per_second"].items()]
    return lines + _table(["source", "training images/s (median)", "epochs", "/ memory",
                           "input pipeline alone, images/s"], rows)


def inference(res):
    lines = [f"`TripletEmbedder.transform` of Fashion-MNIST {res['source']} "
             f"(`{res['encoder']}`, {'x'.join(map(str, res['input_shape']))}, batch "
             f"{res['batch_size']}), {res.get('processes', 'a fresh process per n')}; "
             f"peak RSS by {res['peak_method']}.",
             ""]
    rows = [[p["n"], f"{p['images_per_second']['median']:g}", p["rss_before_mb"],
             p["peak_rss_mb"]["median"], p["peak_increase_mb"], p["startup_peak_rss_mb"]]
            for p in res["per_n"]]
    lines += _table(["n", "images/s", "RSS before (MB)", "peak RSS during transform (MB)",
                     "peak - before (MB)", "peak before transform (MB)"], rows)
    lines += ["", f"Peak RSS grows by {res['peak_growth_mb']} MB between the two n: "
              f"{res['peak_growth_bytes_per_image']} bytes per extra image, against "
              f"{res['output_bytes_per_image']} bytes of output per image and "
              f"{res['decoded_image_bytes']} bytes per decoded float32 image."]
    return lines


def _heads_rows(task):
    raw = task.get("raw_pixels", {})
    rows = []
    for head, e in task["embeddings"].items():
        r = raw.get(head, {})
        notes = [f"{what}: not converged" for what, x in (("embeddings", e), ("raw", r))
                 if not x.get("converged", True)]
        rows.append([head + (f" ({'; '.join(notes)})" if notes else ""),
                     e["accuracy"], e["macro_f1"], r.get("accuracy"), r.get("macro_f1"),
                     f"{e['fit_seconds']:g} / {r.get('fit_seconds', 'n/a')}",
                     f"{e['n_train']}"])
    return rows


def classification(res):
    p = res["embedder_params"]
    margin = "the loss's default" if p["margin"] is None else p["margin"]
    lines = [f"Recipe: `TripletEmbedder` defaults with encoder `{p['encoder']}`, input_shape "
             f"{tuple(p['input_shape'])}: loss `{p['loss']}`, margin {margin}, "
             f"learning_rate {p['learning_rate']}, epochs {p['epochs']}, samples_per_class "
             f"{p['samples_per_class']}, validation_fraction {p['validation_fraction']}, "
             f"augment {p['augment']}, random_state {p['random_state']}.", ""]
    svm_n = res["settings"]["svm_max_train"]
    if svm_n:
        lines += [f"The SVM heads are fitted on a stratified subsample of at most {svm_n} "
                  "training items (the same for embeddings and pixels): an RBF SVC's fit "
                  "time grows about quadratically with the number of items.", ""]
    for key, title in (("all_10", "All 10 classes"), ("hard_5", "Hard five {0, 2, 3, 4, 6}")):
        t = res["tasks"][key]
        lines += [f"**{title}**: {t['n_train']} train / {t['n_test']} test images; encoder "
                  f"training {t['train_seconds']} s for {t['epochs_run']} epoch(s) "
                  f"(collapsed: {t['collapsed']}), embedding {t['embed_seconds']} s.", ""]
        lines += _table(["head", "embeddings acc", "embeddings macro-F1", "raw pixels acc",
                         "raw pixels macro-F1", "fit s (emb / raw)", "head train n"],
                        _heads_rows(t))
        rs = t["test_retrieval"]
        lines += ["", f"Test-set retrieval on the embeddings: P@1 {rs['precision_at_1']}, "
                  f"MAP@R {rs['map_at_r']}.", ""]
    return lines


def retrieval(res):
    lines = [f"Train: {res['train_characters']} characters ({res['train_images']} images) of "
             f"{', '.join(res['train_alphabets'])}. Evaluate: {res['eval_characters']} unseen "
             f"characters ({res['eval_images']} images) of {', '.join(res['eval_alphabets'])}.",
             ""]
    e = res["embeddings"]
    rows = [["embeddings", e["precision_at_1"], e["r_precision"], e["map_at_r"],
             e["knn_accuracy"]]]
    for size, o in res.get("embeddings_other_sizes", {}).items():
        rows.append([f"embeddings, same recipe at {size} (train {o['train_seconds']} s)",
                     o["precision_at_1"], o["r_precision"], o["map_at_r"], o["knn_accuracy"]])
    for name, b in res["baselines"].items():
        rows.append([name, b["precision_at_1"], b["r_precision"], b["map_at_r"],
                     b["knn_accuracy"]])
    lines += _table(["features", "P@1", "R-precision", "MAP@R", "kNN acc (k=5)"], rows)
    q = res["quoted_baselines"]
    lines += ["", f"Encoder training: {e['train_seconds']} s, {e['epochs_run']} epoch(s), "
              f"collapsed: {e['collapsed']}, loss `{res['embedder_params']['loss']}`. "
              f"The issue quotes raw pixels P@1 {q['raw_pixels']['precision_at_1']} / MAP@R "
              f"{q['raw_pixels']['map_at_r']} and PCA-64 {q['pca_64']['precision_at_1']} / "
              f"{q['pca_64']['map_at_r']}."]
    return lines


def _pm(row, key):
    """``mean ± std`` of a score over seeds, or n/a where the task did not run."""
    if row is None:
        return "n/a"
    return f"{row[key]:.4f} ± {row[key + '_std']:.4f}"


def _budget(task, t):
    if "unavailable" in t:
        return f"{task}: not run ({t['unavailable']})"
    if task == "omniglot":
        return (f"Omniglot {t['size']} px: {t['epochs']} epochs on {t['train_characters']} "
                f"characters ({t['train_images']} drawings), retrieval over "
                f"{t['eval_characters']} unseen characters, `small_cnn`")
    label = "Fashion-MNIST hard five 28 px" if task == "fashion" else f"flowers {t['size']} px"
    encoder = "`small_cnn`" if task == "fashion" else "the default encoder (`seed_cnn`)"
    return (f"{label}: {t['epochs']} epochs on {t['n_train']} training images, "
            f"{t['n_test']} test images, {encoder}")


def _verdict(label, w):
    lead = "larger" if w["margin"] > w["spread"] else "not larger"
    return (f"- {label}: `{w['winner']}` is first on {w['metric']} ({w['value']}), "
            f"{w['margin']} ahead of `{w['runner_up']}`; the lead is {lead} than the seeds' "
            f"spread ({w['spread']}).")


def loss_comparison(res):
    tasks = res["tasks"]
    lines = [f"Every variant with the same recipe, budget and {res['seeds']} seed(s) "
             "(mean ± standard deviation over seeds); each loss at its registered "
             f"defaults; `+xbm`: cross-batch memory of {res['memory_size']} rows; no "
             "validation split, so no early stopping: every fit runs its epochs.", ""]
    lines += [f"- {_budget(task, tasks[task])}." for task in tasks]
    if res.get("reused"):
        lines.append(f"- Reused from the run log (same settings and commit): "
                     f"{', '.join(res['reused'])}.")
    lines += ["", "Ordered by Omniglot MAP@R; best head = the better of kNN and logistic "
              "regression; train s = mean seconds per fit (Omniglot / Fashion / flowers).", ""]
    rows = []
    for name in res["order"]:
        row = {task: tasks[task]["results"].get(name) for task in tasks}
        seconds = " / ".join("n/a" if r is None else f"{r['train_seconds']:.0f}"
                             for r in row.values())
        rows.append([f"`{name}`", _pm(row["omniglot"], "map_at_r"),
                     _pm(row["omniglot"], "precision_at_1"),
                     _pm(row["fashion"], "best_accuracy"), _pm(row["flowers"], "best_accuracy"),
                     seconds, ", ".join(t for t, r in row.items() if r and r["collapsed"])
                     or "no"])
    lines += _table(["variant", "Omniglot MAP@R", "Omniglot P@1", "F-MNIST hard-5 best head",
                     "flowers best head", "train s", "collapsed (any seed)"], rows)
    lines.append("")
    for task, label in (("omniglot", "Omniglot"), ("fashion", "Fashion-MNIST hard five"),
                        ("flowers", "flowers")):
        if "winner" in tasks[task]:
            lines.append(_verdict(label, tasks[task]["winner"]))
    return lines


SECTIONS = {
    "throughput": throughput, "input_pipeline": input_pipeline, "inference": inference,
    "classification": classification, "retrieval": retrieval,
    "loss_comparison": loss_comparison,
}


def peer(res):
    s = res["settings"]
    lines = [f"Network: {res['network']}. Fashion-MNIST hard five "
             f"{res['protocol']['classes']}, {s['train_n'] or 'all'} train / "
             f"{s['test_n'] or 'all'} test images, {s['epochs']} epoch(s), P x K = "
             f"{res['protocol']['P']} x {res['protocol']['K']}; {s['rounds']} round(s), the "
             "libraries alternating which goes first, each run a fresh process. Ours: "
             "`TripletEmbedder` default recipe (loss, margin, warm-up + cosine decay, 10 % "
             "validation with early stopping, diagnostics); PML: TripletMarginLoss(0.2) + "
             "TripletMarginMiner(0.2, all), MPerClassSampler(m=25, batch 125), Adam 1e-3, "
             "2 torch threads. Images/s: training images x epochs / wall time of the whole "
             "training call. Heads: kNN (k=5) and logistic regression "
             "(`classifiers.make_head`), fitted on the train-split embeddings.", ""]
    rows = [[r["round"] + 1, r["library"], r["images_per_second"], r["train_seconds"],
             r["epochs_run"], r["train_images_per_epoch"], r["accuracy"]["knn"],
             r["accuracy"]["logreg"], r.get("own_cores"), r.get("foreign_cores")]
            for r in res["runs"]]
    lines += _table(["round", "library", "images/s", "train s", "epochs", "images/epoch",
                     "kNN acc", "logreg acc", "own cores", "other processes' cores"], rows)
    ips, acc = res["images_per_second"], res["accuracy"]
    lines += ["", f"Medians: ours {ips['ours']['median']:g} images/s vs PML "
              f"{ips['pml']['median']:g} (ratio {res['ratio_ours_to_pml']['median']:g}, "
              f"per round {_values(res['ratio_ours_to_pml'])}); kNN {acc['knn']['ours']['median']}"
              f" vs {acc['knn']['pml']['median']}; logreg {acc['logreg']['ours']['median']} vs "
              f"{acc['logreg']['pml']['median']}. 'Other processes' cores' is the CPU time "
              "other processes used during the training call, per second: with 2 cores, "
              "1.0 leaves a run about half the machine."]
    cpu = res.get("cpu_ms_per_image")
    if cpu:
        lines += ["", f"CPU time per trained image (this process's CPU seconds / images): ours "
                  f"{cpu['ours']['median']} ms, PML {cpu['pml']['median']} ms. On a quiet "
                  "machine this is about 2 cores / images per second; on a busy one it "
                  "shows which library's work per image is smaller."]
    if res.get("earlier_run_under_load"):
        lines += ["", f"Earlier run of this session, under load: {res['earlier_run_under_load']}."]
    done = s.get("rounds_completed", s["rounds"])
    if done < s["rounds"]:
        lines += ["", f"**Only {done} of {s['rounds']} rounds completed** (the run was stopped "
                  "for time; its finished runs were reported from "
                  f"`{res.get('from_log', 'its log')}`): the figures are single runs, not "
                  "medians."]
    return lines


def profile_step(res):
    peak = res["peak"]
    lines = [f"Peak assumed: {peak['peak_gflops']} GFLOP/s float32 ({peak['assumption']}).", ""]
    for c in res["configs"]:
        lines += [f"**{c['encoder']} at {'x'.join(map(str, c['input_shape']))}**, batch "
                  f"{c['batch']}, forward {c['forward_mflops_per_image']} MFLOP per image "
                  "(Conv2D and Dense multiply-adds x 2):", ""]
        for precision, p in c["precisions"].items():
            ms, cpu = p["ms_per_step"], p.get("cpu_ms_per_step", {})
            rows = [[b["part"], b["ms"], f"{100 * b['share']:.0f} %"] for b in p["breakdown"]]
            rows.append(["= fed trainer step", cpu["fed_trainer_step"]["median"], "100 %"])
            rows.append(["cross-entropy step (for comparison)",
                         cpu["cross_entropy_step"]["median"], ""])
            lines += [f"{precision}, breakdown from each part's median CPU time (this "
                      "process, all threads; wall time swung with the other processes' "
                      "load):", ""]
            lines += _table(["part of the step", "CPU ms per step", "share"], rows)
            rows = [[part, p["fastest_ms_per_step"][part], ms[part]["median"],
                     cpu[part]["median"] if part in cpu else None, _values(ms[part])]
                    for part in ms]
            lines += ["", "Each timed part (nested: each adds work to the one above):", ""]
            lines += _table(["part", "fastest ms", "median ms", "median CPU ms (this process)",
                             "repetitions (ms)"], rows)
            gf = p["achieved_gflops"]
            load = [f for v in p["foreign_cores"].values() for f in v if f is not None]
            per_cpu = p.get("gflops_per_cpu_second", {})
            if per_cpu:
                lines += ["", f"Per busy core (FLOPs / CPU seconds): forward "
                          f"{per_cpu['forward']} GFLOP/s, fed training step "
                          f"{per_cpu['fed_trainer_step']} GFLOP/s."]
            lines += ["", f"Achieved: forward {gf['forward']} GFLOP/s, training step "
                      f"{gf['trainer_step']} GFLOP/s on one batch, {gf['fed_trainer_step']} "
                      "fed by the pipeline (fastest repetitions, wall time: "
                      f"{p['images_per_second']['fed_trainer_step']} images/s); other "
                      "processes used "
                      f"{np.median(load) if load else 'n/a'} cores (median over repetitions).",
                      ""]
        if "fraction_of_peak_fed_step" in c:
            lines += [f"Fed float32 training step: {100 * c['fraction_of_peak_fed_step']:.1f} % "
                      "of the assumed 2-core peak in wall time on this shared machine; "
                      f"{100 * c.get('fraction_of_core_peak_per_cpu_second', 0):.1f} % of one "
                      "core's peak per CPU second it got.", ""]
        if "bfloat16_speedup_trainer_step" in c:
            b, fed = c["bfloat16_speedup_trainer_step"], c["bfloat16_speedup_fed_trainer_step"]
            lines += [f"mixed_bfloat16 speed / float32 speed: trainer step {b['median']:g}x "
                      f"(per round {_values(b)}); fed step {fed['median']:g}x (per round "
                      f"{_values(fed)}); fastest fed step vs fastest: "
                      f"{c['bfloat16_speedup_fastest']:g}x.", ""]
    acc = res.get("bfloat16_accuracy")
    if acc:
        f32, bf = acc["float32"], acc["mixed_bfloat16"]
        lines += [f"Accuracy check, `{acc['encoder']}` on {acc['train_n']} hard-5 training / "
                  f"{acc['test_n']} test images, {acc['epochs']} epochs, same seed: float32 "
                  f"kNN {f32['knn']} / logreg {f32['logreg']} (training {f32['train_seconds']} "
                  f"s), mixed_bfloat16 kNN {bf['knn']} / logreg {bf['logreg']} (training "
                  f"{bf['train_seconds']} s). One run each: differences below about 0.01 are "
                  "within run-to-run variation.", ""]
    f = res.get("fit_vs_seed")
    if f:
        lines += [f"Whole `TripletEmbedder.fit` (seed CNN, 112x112x3, {f['images']} random "
                  f"images, {f['epochs']} epochs) {f['fit_images_per_second']['median']:g} "
                  f"images/s vs the seed's eager loop {f['seed_images_per_second']['median']:g}"
                  f": {f['ratio']['median']:g}x ({f['note']})."]
    return lines


def ann(res):
    """ANN vs exact kNN per gallery size."""
    lines = ["| gallery | classes | agreement with exact | accuracy exact / ANN | index build s "
             "| exact queries/s | ANN queries/s | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for s in res["sizes"].values():
        lines.append(f"| {s['gallery']:,} | {s['classes']} | {s['agreement']} | "
                     f"{s['exact_accuracy']} / {s['ann_accuracy']} | {s['ann_build_seconds']} "
                     f"| {s['exact_queries_per_second']} | {s['ann_queries_per_second']} | "
                     f"{s['speedup']}x |")
    return lines + [""]


def open_set(res):
    """AUROC / FPR at 95% TPR of every open-set score, per task."""
    tasks = [(f"Fashion-MNIST, hidden {t['hidden_classes']}", t)
             for t in res["fashion_mnist"].get("tasks", [])]
    if res.get("omniglot", {}).get("embeddings"):
        tasks.append(("Omniglot, unseen alphabets", res["omniglot"]))
    scores = sorted({k for _, t in tasks for k in t["embeddings"]})
    lines = ["| task | " + " | ".join(scores) + " |", "|---" * (len(scores) + 1) + "|"]
    for name, t in tasks:
        cells = [f"{t['embeddings'][k]['auroc']} / {t['embeddings'][k]['fpr_at_95_tpr']}"
                 if k in t["embeddings"] else "" for k in scores]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return ["AUROC / FPR at 95% TPR (known vs never-trained classes):", ""] + lines + [""]


def scaling(res):
    """Streaming memory, replicas and Dask folds (rendered by the benchmark module)."""
    from benchmarks.scaling import section_lines

    return section_lines(res) + [""]


def user_shape(res):
    """The whole ``triplet evaluate`` command on the user's shape, and its heads."""
    classes = ", ".join(f"{name}: {n}" for name, n in res["classes"].items())
    rows = [[head, s["accuracy"], s.get("balanced_accuracy")] for head, s in res["heads"].items()]
    return [f"`{res['command']}` on {res['n_images']} RGB PNGs of {res['image_size']} px "
            f"({classes}): **{res['wall_seconds']:g} s** wall for the whole command (a fresh "
            "process: imports, three per-fold trainings, the report, the refit on all images "
            "and the saved model).", ""] + _table(
        ["head", "accuracy (3-fold mean)", "balanced accuracy"], rows) + [""]


def photos(res):
    """The library's defaults on the flowers 80/20 split, beside a raw-pixel SVM."""
    rows = [[head, f"{acc:.4f}"] for head, acc in res["accuracy"].items()]
    rows.append(["RBF SVM on raw 32 px pixels (baseline)", f"{res['raw_svm']:.4f}"])
    return [f"Training: **{res['train_seconds']:g} s**, {res['epochs_run']} epochs "
            f"({res['stop_reason']}).", ""] + _table(["head", "test accuracy"], rows) + [""]


SECTIONS.update({"photos": photos, "peer": peer, "profile_step": profile_step, "ann": ann,
                 "open_set": open_set, "scaling": scaling, "user_shape": user_shape})
