//! Sharding, augmentation, batch assembly, normalisation and synthetic data.

use ringsgd::data::{
    epoch_permutation, shard_counts, shard_range, steps_per_epoch, synthetic, Augmentation,
    BatchBuilder, Dataset, Normalizer, SampleAugment, Shape, ShardPlan, IMAGE_BYTES,
};
use ringsgd::Error;

#[test]
fn permutation_is_a_deterministic_shuffle() {
    for n in [0usize, 1, 2, 7, 100] {
        let p = epoch_permutation(n, 3, 5);
        let mut s = p.clone();
        s.sort_unstable();
        assert_eq!(s, (0..n).collect::<Vec<_>>());
        assert_eq!(p, epoch_permutation(n, 3, 5));
    }
    let a = epoch_permutation(1000, 1, 0);
    assert_ne!(a, epoch_permutation(1000, 1, 1));
    assert_ne!(a, epoch_permutation(1000, 2, 0));
    assert_ne!(a, (0..1000).collect::<Vec<_>>());
}

#[test]
fn permutation_is_pinned() {
    // Checkpoints resume by recomputing the permutation: a change of
    // algorithm silently changes resumed runs, so the values are pinned.
    assert_eq!(
        epoch_permutation(12, 42, 0),
        PINNED_PERMUTATION.to_vec(),
        "the epoch permutation algorithm changed"
    );
}

const PINNED_PERMUTATION: [usize; 12] = [5, 1, 8, 4, 0, 11, 3, 7, 9, 6, 2, 10];

#[test]
fn permutation_positions_are_uniform() {
    // Where element 0 lands over many epochs: roughly uniform over 0..8.
    let mut hits = [0usize; 8];
    for epoch in 0..4000 {
        let p = epoch_permutation(8, 9, epoch);
        hits[p.iter().position(|&v| v == 0).unwrap()] += 1;
    }
    // Expected 500 each; 6 sigma is about 130.
    assert!(hits.iter().all(|&h| (370..630).contains(&h)), "{hits:?}");
}

#[test]
fn shard_ranges_tile_the_batch() {
    for len in 0..40 {
        for size in 1..6 {
            let mut next = 0;
            for rank in 0..size {
                let r = shard_range(len, rank, size).unwrap();
                assert_eq!(r.start, next);
                assert!(r.len() == len / size || r.len() == len / size + 1);
                next = r.end;
            }
            assert_eq!(next, len);
            let counts = shard_counts(len, size);
            assert_eq!(counts.iter().sum::<usize>(), len);
            assert!(counts.windows(2).all(|w| w[0] >= w[1]));
        }
    }
    assert!(matches!(
        shard_range(4, 0, 0),
        Err(Error::InvalidArgument(_))
    ));
    let err = shard_range(4, 3, 3).unwrap_err().to_string();
    assert!(
        err.contains("rank 3") && err.contains("world size 3"),
        "{err}"
    );
}

#[test]
fn steps_per_epoch_policies() {
    assert_eq!(steps_per_epoch(100, 32, true), 3);
    assert_eq!(steps_per_epoch(100, 32, false), 4);
    assert_eq!(steps_per_epoch(96, 32, false), 3);
    assert_eq!(steps_per_epoch(10, 0, false), 0);
}

#[test]
fn plans_give_the_same_global_batches_for_every_world_size() {
    let (n, gb, seed) = (103usize, 16usize, 77u64);
    for drop_last in [false, true] {
        let one = ShardPlan::new(n, gb, drop_last, seed, 0, 1).unwrap();
        for epoch in 0..3 {
            let e1 = one.epoch(epoch);
            let mut covered = Vec::new();
            for step in 0..e1.steps() {
                let global = e1.step(step).unwrap();
                assert_eq!(global.indices.len(), global.global_len);
                for size in 1..=4 {
                    let mut union = Vec::new();
                    let mut counts = Vec::new();
                    for rank in 0..size {
                        let plan = one.with_rank(rank, size).unwrap();
                        let e = plan.epoch(epoch);
                        let s = e.step(step).unwrap();
                        assert_eq!(s.global_len, global.global_len);
                        assert_eq!(s.counts(), shard_counts(s.global_len, size));
                        assert_eq!(s.count_of(rank), s.len());
                        union.extend_from_slice(s.indices);
                        counts.push(s.len());
                        let w: f64 = (0..size).map(|r| s.count_of(r) as f64).sum::<f64>()
                            / s.global_len as f64;
                        assert!((w - 1.0).abs() < 1e-12);
                    }
                    assert_eq!(
                        union, global.indices,
                        "epoch {epoch} step {step} size {size}"
                    );
                    assert_eq!(counts, shard_counts(global.global_len, size));
                }
                covered.extend_from_slice(global.indices);
            }
            covered.sort_unstable();
            covered.dedup();
            let expect = if drop_last { n / gb * gb } else { n };
            assert_eq!(covered.len(), expect, "each sample at most once per epoch");
        }
        assert!(one.epoch(0).step(one.steps_per_epoch()).is_err());
    }
}

#[test]
fn last_partial_batch_split_and_weights() {
    // 10 samples, batch 4, 3 ranks: the last batch has 2 samples, rank 2 gets none.
    let plan = ShardPlan::new(10, 4, false, 1, 2, 3).unwrap();
    let e = plan.epoch(0);
    let s = e.step(2).unwrap();
    assert_eq!(s.global_len, 2);
    assert!(s.is_empty());
    assert_eq!(s.counts(), vec![1, 1, 0]);
    assert_eq!(s.weight(), 0.0);
    let s0 = plan
        .with_rank(0, 3)
        .unwrap()
        .epoch(0)
        .step(0)
        .unwrap()
        .weight();
    assert_eq!(s0, 2.0 / 4.0);
}

#[test]
fn plan_rejects_bad_arguments() {
    let msg = |r: ringsgd::Result<ShardPlan>| r.unwrap_err().to_string();
    assert!(msg(ShardPlan::new(100, 2, false, 0, 0, 4)).contains("smaller than the world size"));
    assert!(msg(ShardPlan::new(100, 0, false, 0, 0, 1)).contains("at least 1"));
    assert!(msg(ShardPlan::new(100, 8, false, 0, 4, 4)).contains("rank 4"));
    assert!(msg(ShardPlan::new(100, 8, false, 0, 0, 0)).contains("world size"));
    assert!(msg(ShardPlan::new(5, 8, true, 0, 0, 1)).contains("no step"));
    assert!(msg(ShardPlan::new(0, 8, false, 0, 0, 1)).contains("no step"));
}

/// Straightforward reference: zero-pad to (32+2p)^2, crop, then flip.
fn reference_augment(img: &[u8], a: &SampleAugment) -> Vec<u8> {
    let p = a.pad;
    let w = 32 + 2 * p;
    let mut out = vec![0u8; IMAGE_BYTES];
    for c in 0..3 {
        let mut padded = vec![0u8; w * w];
        for y in 0..32 {
            for x in 0..32 {
                padded[(y + p) * w + x + p] = img[c * 1024 + y * 32 + x];
            }
        }
        for y in 0..32 {
            for x in 0..32 {
                let cropped = |xx: usize| padded[(y + a.offset_y) * w + xx + a.offset_x];
                out[c * 1024 + y * 32 + x] = if a.flip { cropped(31 - x) } else { cropped(x) };
            }
        }
    }
    out
}

#[test]
fn augmentation_matches_pad_crop_flip_reference() {
    let ds = synthetic::generate(4, 2);
    let mut flips = 0;
    let mut offsets = [[0usize; 9]; 2];
    for position in 0..400 {
        let a = Augmentation::standard().sample(5, 1, position);
        assert!(a.offset_y <= 8 && a.offset_x <= 8);
        offsets[0][a.offset_y] += 1;
        offsets[1][a.offset_x] += 1;
        flips += usize::from(a.flip);
        let img = ds.image(position % 4);
        let mut out = vec![0u8; IMAGE_BYTES];
        a.apply(Shape::CIFAR, img, &mut out);
        assert_eq!(
            out,
            reference_augment(img, &a),
            "position {position}: {a:?}"
        );
    }
    assert!((150..250).contains(&flips), "{flips} flips of 400");
    assert!(offsets.iter().flatten().all(|&c| c > 15), "{offsets:?}");
    // No flip without hflip; no shift without padding.
    let a = Augmentation {
        pad: 0,
        hflip: false,
    }
    .sample(5, 1, 3);
    assert_eq!((a.offset_y, a.offset_x, a.flip), (0, 0, false));
}

#[test]
fn batches_are_normalised_augmented_pixels_with_black_padding() {
    let ds = synthetic::generate(30, 4);
    let norm = Normalizer::from_dataset(&ds).unwrap();
    let aug = Augmentation::standard();
    let mut b = BatchBuilder::new(norm.clone(), Some(aug)).unwrap();
    let idx: Vec<usize> = (0..30).rev().collect();
    let (seed, epoch, first) = (9, 2, 100);
    let batch = b.fill_train(&ds, &idx, seed, epoch, first).unwrap();
    assert_eq!(batch.images.shape(), &[30, 3, 32, 32]);
    let mut saw_padding = false;
    for (k, &i) in idx.iter().enumerate() {
        assert_eq!(batch.labels[k], ds.label(i));
        let a = aug.sample(seed, epoch, first + k);
        let raw = reference_augment(ds.image(i), &a);
        let img = batch.images.index_axis(ndarray::Axis(0), k);
        for (j, (&got, &byte)) in img.iter().zip(&raw).enumerate() {
            assert_eq!(got.to_bits(), norm.normalize(j / 1024, byte).to_bits());
        }
        if a.offset_y == 0 {
            // The top 4 rows come from the zero padding: black pixels, normalised.
            saw_padding = true;
            for c in 0..3 {
                let black = norm.normalize(c, 0);
                assert!(img
                    .slice(ndarray::s![c, 0..4, ..])
                    .iter()
                    .all(|&v| v == black));
                assert!(black < 0.0, "black is below the mean");
            }
        }
    }
    assert!(
        saw_padding,
        "no sample with a top crop among 30; pick another seed"
    );

    // Evaluation batches are never augmented.
    let batch = b.fill_eval(&ds, &[3, 1]).unwrap();
    assert_eq!(batch.labels, &[ds.label(3), ds.label(1)]);
    let got: Vec<f32> = batch.images.iter().copied().collect();
    let want: Vec<f32> = [3usize, 1]
        .iter()
        .flat_map(|&i| {
            ds.image(i)
                .iter()
                .enumerate()
                .map(|(j, &v)| norm.normalize(j / 1024, v))
        })
        .collect();
    assert_eq!(got, want);
    let range = b.fill_eval_range(&ds, 1..4).unwrap();
    assert_eq!(range.labels, &ds.labels()[1..4]);
}

#[test]
fn augmentation_does_not_depend_on_the_split() {
    let ds = synthetic::generate(50, 5);
    let norm = Normalizer::from_dataset(&ds).unwrap();
    let (gb, seed) = (12, 31);
    let single = ShardPlan::new(ds.len(), gb, false, seed, 0, 1).unwrap();
    let mut whole = BatchBuilder::new(norm.clone(), Some(Augmentation::standard())).unwrap();
    for epoch in [0u64, 3] {
        let e1 = single.epoch(epoch);
        for step in 0..e1.steps() {
            let full = whole.fill_shard(&ds, &e1.step(step).unwrap()).unwrap();
            let want: Vec<u32> = full.images.iter().map(|v| v.to_bits()).collect();
            let want_labels = full.labels.to_vec();
            for size in 2..=3 {
                let mut got = Vec::new();
                let mut got_labels = Vec::new();
                for rank in 0..size {
                    let mut part =
                        BatchBuilder::new(norm.clone(), Some(Augmentation::standard())).unwrap();
                    let e = single.with_rank(rank, size).unwrap().epoch(epoch);
                    let shard = e.step(step).unwrap();
                    let b = part.fill_shard(&ds, &shard).unwrap();
                    got.extend(b.images.iter().map(|v| v.to_bits()));
                    got_labels.extend_from_slice(b.labels);
                }
                assert_eq!(got, want, "epoch {epoch} step {step} size {size}");
                assert_eq!(got_labels, want_labels);
            }
        }
    }
}

#[test]
fn builder_reuses_its_buffers() {
    let ds = synthetic::generate(40, 6);
    let mut b = BatchBuilder::new(Normalizer::identity(3), Some(Augmentation::standard())).unwrap();
    b.reserve(32);
    assert_eq!(b.capacity(), 32);
    let idx: Vec<usize> = (0..32).collect();
    let p0 = b.fill_train(&ds, &idx, 0, 0, 0).unwrap().images.as_ptr();
    for n in [5usize, 32, 0, 17] {
        let batch = b.fill_train(&ds, &idx[..n], 0, 1, 0).unwrap();
        assert_eq!(batch.images.shape()[0], n);
        assert_eq!(batch.images.as_ptr(), p0, "buffer moved for a batch of {n}");
        assert!(batch.images.is_standard_layout());
    }
    assert_eq!(b.capacity(), 32);
    // Growing is allowed and then sticks.
    let big: Vec<usize> = (0..40).collect();
    b.fill_eval(&ds, &big).unwrap();
    assert_eq!(b.capacity(), 40);

    let err = b.fill_eval(&ds, &[0, 40]).unwrap_err().to_string();
    assert!(err.contains("index 40") && err.contains("entry 1"), "{err}");
    assert!(b.fill_eval_range(&ds, 30..41).is_err());
    assert!(BatchBuilder::new(
        Normalizer::identity(3),
        Some(Augmentation {
            pad: 17,
            hflip: true
        })
    )
    .is_err());
}

#[test]
fn normaliser_statistics_are_exact() {
    // Channel 0: one image all 0, one all 255 -> mean 0.5, std 0.5.
    // Channel 1: all 51 and 153 -> mean 0.4, std 0.2. Channel 2: 0 and 102.
    let mut px = vec![0u8; 2 * IMAGE_BYTES];
    px[..1024].fill(0);
    px[1024..2048].fill(51);
    px[2048..3072].fill(0);
    px[3072..4096].fill(255);
    px[4096..5120].fill(153);
    px[5120..6144].fill(102);
    let ds = Dataset::cifar(px, vec![0, 1], 10).unwrap();
    let n = Normalizer::from_dataset(&ds).unwrap();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
    assert!(close(n.mean()[0], 0.5) && close(n.std()[0], 0.5), "{n:?}");
    assert!(close(n.mean()[1], 0.4) && close(n.std()[1], 0.2), "{n:?}");
    assert!(close(n.mean()[2], 0.2) && close(n.std()[2], 0.2), "{n:?}");
    assert_eq!(n.normalize(0, 255), 1.0);
    assert_eq!(n.lookup_table()[1][153], n.normalize(1, 153));

    // Normalised synthetic data has mean ~0 and std ~1 per channel.
    let ds = synthetic::generate(60, 1);
    let n = Normalizer::from_dataset(&ds).unwrap();
    let mut b = BatchBuilder::new(n, None).unwrap();
    let idx: Vec<usize> = (0..60).collect();
    let batch = b.fill_eval(&ds, &idx).unwrap();
    for c in 0..3 {
        let v = batch.images.index_axis(ndarray::Axis(1), c);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        assert!(
            mean.abs() < 1e-4 && (var.sqrt() - 1.0).abs() < 1e-4,
            "{c}: {mean} {var}"
        );
    }
}

#[test]
fn normaliser_and_dataset_reject_bad_input() {
    let empty = Dataset::cifar(Vec::new(), Vec::new(), 10).unwrap();
    assert!(Normalizer::from_dataset(&empty).is_err());
    let flat = Dataset::cifar(vec![9u8; IMAGE_BYTES], vec![0], 10).unwrap();
    assert!(Normalizer::from_dataset(&flat)
        .unwrap_err()
        .to_string()
        .contains("constant"));
    assert!(Normalizer::new(vec![0.0; 3], vec![1.0, 0.0, 1.0]).is_err());
    assert!(Normalizer::new(vec![f32::NAN, 0.0, 0.0], vec![1.0; 3]).is_err());

    assert!(Dataset::cifar(vec![0; IMAGE_BYTES + 1], vec![0], 10).is_err());
    let err = Dataset::cifar(vec![0; 2 * IMAGE_BYTES], vec![0, 10], 10).unwrap_err();
    assert!(err.to_string().contains("record 1"), "{err}");
    assert!(Dataset::cifar(Vec::new(), Vec::new(), 0).is_err());
    let ds = synthetic::generate(5, 1);
    assert!(ds.subset(&[0, 5]).is_err());
    assert_eq!(ds.subset(&[4, 4]).unwrap().labels(), &[4, 4]);
    assert_eq!(ds.truncated(2).len(), 2);
}

#[test]
fn synthetic_data_is_deterministic_balanced_and_learnable() {
    let a = synthetic::generate(200, 8);
    assert_eq!(a, synthetic::generate(200, 8));
    assert_eq!(a.truncated(50), synthetic::generate(50, 8));
    assert_ne!(a, synthetic::generate(200, 9));
    assert_eq!(a.class_counts(), vec![20; 10]);
    assert_ne!(
        synthetic::generate_split(10, 8, 1),
        synthetic::generate(10, 8)
    );

    // A nearest-class-mean classifier on the mean colour per channel plus the
    // row-vs-column variation (stripe orientation) separates the classes;
    // a CNN sees much more.
    let features = |ds: &Dataset, i: usize| -> [f64; 5] {
        let img = ds.image(i);
        let mut f = [0f64; 5];
        for c in 0..3 {
            f[c] = img[c * 1024..(c + 1) * 1024]
                .iter()
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / 1024.0;
        }
        // Mean absolute difference between vertical and horizontal neighbours.
        let (mut dv, mut dh) = (0f64, 0f64);
        for y in 0..31 {
            for x in 0..31 {
                let p = |yy: usize, xx: usize| {
                    f64::from(img[yy * 32 + xx])
                        + f64::from(img[1024 + yy * 32 + xx])
                        + f64::from(img[2048 + yy * 32 + xx])
                };
                dv += (p(y + 1, x) - p(y, x)).abs();
                dh += (p(y, x + 1) - p(y, x)).abs();
            }
        }
        f[3] = dv / 961.0;
        f[4] = dh / 961.0;
        f
    };
    let train = synthetic::generate(500, 1);
    let test = synthetic::generate_split(200, 1, 1);
    let mut centroids = [[0f64; 5]; 10];
    for i in 0..train.len() {
        let f = features(&train, i);
        for d in 0..5 {
            centroids[usize::from(train.label(i))][d] += f[d] / 50.0;
        }
    }
    let correct = (0..test.len())
        .filter(|&i| {
            let f = features(&test, i);
            let best = (0..10)
                .min_by(|&a, &b| {
                    let d = |k: usize| {
                        (0..5)
                            .map(|j| (f[j] - centroids[k][j]).powi(2))
                            .sum::<f64>()
                    };
                    d(a).partial_cmp(&d(b)).unwrap()
                })
                .unwrap();
            best == usize::from(test.label(i))
        })
        .count();
    assert!(correct >= 180, "nearest centroid got {correct}/200");
}

/// The CIFAR pipeline is bitwise what it was before datasets had shapes
/// (values computed on the 3x32x32-only code): synthetic images, the
/// normaliser and an augmented batch.
#[test]
fn cifar_batches_are_pinned() {
    let ds = synthetic::generate(64, 7);
    assert_eq!(crc32fast::hash(ds.pixels().unwrap()), 0x07a8_2050);
    let norm = Normalizer::from_dataset(&ds).unwrap();
    assert_eq!(norm.mean(), &[0.34448397, 0.30009156, 0.29383352]);
    assert_eq!(norm.std(), &[0.32515207, 0.2859762, 0.29511464]);
    let mut b = BatchBuilder::new(norm, Some(Augmentation::standard())).unwrap();
    let idx: Vec<usize> = (0..32).map(|i| (i * 5) % 64).collect();
    let batch = b.fill_train(&ds, &idx, 3, 2, 100).unwrap();
    let mut h = crc32fast::Hasher::new();
    for v in batch.images.iter() {
        h.update(&v.to_bits().to_le_bytes());
    }
    assert_eq!(h.finalize(), 0xf386_ae1b);
}
