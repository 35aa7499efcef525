"""Config overrides that size the benchmarks' runs for a small CPU machine (`--set`-style `key=value` lists)."""

# One hour on 2 CPU cores: a small ResNet on 32x32 images (Tiny-ImageNet
# downscaled from 64x64), a short cosine schedule, one 2-thread student worker
# (two 1-thread DDP workers only add all-reduces).
CPU_SCALE = [
    "model.arch=resnet8",
    "data.image_size=32",
    "experts.epochs=8",
    "distill.epochs=8",
    "experts.lr_schedule=cosine",
    "distill.lr_schedule=cosine",
    "experts.batch_size=128",
    "distill.batch_size=128",
    "experts.resources.cpus_per_worker=1",
    "distill.resources.num_workers=1",
    "distill.resources.cpus_per_worker=2",
    "cache.resources.cpus_per_worker=1",
    "data.loader_workers=0",
]
# For the 3-seed claims of one data set on 2 CPU cores with bf16 in at most
# about 90 minutes: 3x the epochs of `cpu`, and a budget of SGD steps so the
# few-shot experts (a few steps an epoch) are trained as long as the others.
# Measured (docs/RESULTS.md): CIFAR-10-LT, 6 students a seed, 33 min for two
# seeds on an idle AMD EPYC with AVX512-BF16, so about 50 for three.
CPU_LONG_SCALE = CPU_SCALE + ["experts.epochs=24", "distill.epochs=24", "experts.min_steps=600", "precision=bf16"]
SCALES = {"cpu": CPU_SCALE, "cpu-long": CPU_LONG_SCALE, "paper": []}
