//! Checkpoint format round trip and rejection of damaged files; safetensors
//! export round trip and layout.

use std::path::Path;

use ringsgd::checkpoint::{safetensors, Checkpoint, OptimizerState, FORMAT_VERSION, MAGIC};
use ringsgd::data::DataIdentity;
use ringsgd::Error;

mod common;
use common::Scratch;

fn sample() -> Checkpoint {
    // Values that a lossy encoding would alter: signed zero, subnormal,
    // infinities, a NaN with a payload.
    let params = vec![
        0.0,
        -0.0,
        1.5e-42,
        f32::MIN_POSITIVE,
        -3.25,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_1234),
        1.0 / 3.0,
    ];
    Checkpoint {
        model_spec: "conv(3->16,k3)-relu-pool2-fc(10) ü".into(),
        input_chw: [3, 32, 32],
        optimizer: OptimizerState {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 5e-4,
            nesterov: true,
            steps: 1234,
            momentum_buffer: Some(params.iter().map(|v| v * 0.5).collect()),
        },
        params,
        epoch: 3,
        step: 1234,
        step_in_epoch: 7,
        seed: u64::MAX - 1,
        rng_state: vec![1, 2, 3, 255],
        world_size_at_save: 4,
        config: vec![
            ("global_batch".into(), "128".into()),
            ("schedule".into(), "cosine:warmup=5".into()),
        ],
        metrics: vec![("test_acc".into(), 0.8125), ("loss".into(), f64::NAN)],
        data: Some(DataIdentity {
            kind: "CIFAR-10".into(),
            train_images: 50_000,
            test_images: 10_000,
            train_pixels_crc: 0xdead_beef,
            train_labels_crc: 1,
            test_pixels_crc: u32::MAX,
            test_labels_crc: 0,
        }),
    }
}

/// Bitwise equality (NaN-aware).
fn same(a: &Checkpoint, b: &Checkpoint) -> bool {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mbits = |v: &[(String, f64)]| {
        v.iter()
            .map(|(k, x)| (k.clone(), x.to_bits()))
            .collect::<Vec<_>>()
    };
    bits(&a.params) == bits(&b.params)
        && a.optimizer.momentum_buffer.as_deref().map(bits)
            == b.optimizer.momentum_buffer.as_deref().map(bits)
        && a.optimizer.lr.to_bits() == b.optimizer.lr.to_bits()
        && a.optimizer.momentum == b.optimizer.momentum
        && a.optimizer.dampening == b.optimizer.dampening
        && a.optimizer.weight_decay == b.optimizer.weight_decay
        && a.optimizer.nesterov == b.optimizer.nesterov
        && a.optimizer.steps == b.optimizer.steps
        && a.model_spec == b.model_spec
        && a.input_chw == b.input_chw
        && (a.epoch, a.step, a.step_in_epoch, a.seed) == (b.epoch, b.step, b.step_in_epoch, b.seed)
        && a.rng_state == b.rng_state
        && a.world_size_at_save == b.world_size_at_save
        && a.config == b.config
        && mbits(&a.metrics) == mbits(&b.metrics)
}

fn ckpt_msg(err: Error, path: &Path) -> String {
    let shown = err.to_string();
    match err {
        Error::Checkpoint { path: p, msg } => {
            assert_eq!(p, path);
            format!("{msg} | {shown}")
        }
        other => panic!("expected Error::Checkpoint, got {other:?}"),
    }
}

#[test]
fn round_trip_is_bitwise_and_atomic() {
    let s = Scratch::new("ckpt", "roundtrip");
    let path = s.path().join("model.ckpt");
    let c = sample();
    c.save_atomic(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert!(same(&c, &back), "{c:?}\n{back:?}");
    assert_eq!(back.config_value("global_batch"), Some("128"));
    assert_eq!(back.metric("test_acc"), Some(0.8125));

    // Overwrite in place; no temporary file is left behind.
    let mut c2 = Checkpoint {
        optimizer: OptimizerState::default(),
        ..sample()
    };
    c2.epoch = 4;
    c2.save_atomic(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.epoch, 4);
    assert_eq!(back.optimizer.momentum_buffer, None);
    let names: Vec<_> = std::fs::read_dir(s.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["model.ckpt".to_string()]);

    // Empty checkpoint too.
    let empty = Checkpoint::default();
    empty.save_atomic(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), empty);
}

#[test]
fn header_follows_the_documented_layout() {
    let bytes = sample().to_bytes().unwrap();
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(&bytes[..8], b"RINGSGD\0");
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        FORMAT_VERSION
    );
    assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 7);
    assert_eq!(
        u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
        bytes.len() as u64
    );
    assert_eq!(&bytes[24..28], b"META");
    let n = bytes.len();
    assert_eq!(
        u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()),
        crc32fast::hash(&bytes[..n - 4])
    );
}

#[test]
fn every_flipped_byte_and_every_truncation_is_rejected() {
    let c = Checkpoint {
        params: vec![1.0, 2.0],
        model_spec: "m".into(),
        ..Default::default()
    };
    let bytes = c.to_bytes().unwrap();
    let path = Path::new("flip.ckpt");
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= bit;
            assert!(
                Checkpoint::from_bytes(&bad, path).is_err(),
                "flipping bit {bit:#x} of byte {i} went unnoticed"
            );
        }
    }
    for len in 0..bytes.len() {
        let msg = ckpt_msg(
            Checkpoint::from_bytes(&bytes[..len], path).unwrap_err(),
            path,
        );
        assert!(
            msg.contains("truncated") || (len == 0 && msg.contains("not a ringsgd checkpoint")),
            "length {len}: {msg}"
        );
    }
}

#[test]
fn damaged_files_give_clear_errors() {
    let s = Scratch::new("ckpt", "damaged");
    let path = s.path().join("c.ckpt");
    let good = sample().to_bytes().unwrap();

    // Corrupted payload byte.
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let msg = ckpt_msg(Checkpoint::load(&path).unwrap_err(), &path);
    assert!(msg.contains("checksum mismatch: file corrupted"), "{msg}");
    assert!(msg.contains("c.ckpt"), "{msg}");

    // Truncated.
    std::fs::write(&path, &good[..good.len() - 9]).unwrap();
    let msg = ckpt_msg(Checkpoint::load(&path).unwrap_err(), &path);
    assert!(msg.contains("truncated"), "{msg}");

    // Trailing garbage.
    let mut long = good.clone();
    long.extend_from_slice(b"xx");
    std::fs::write(&path, &long).unwrap();
    let msg = ckpt_msg(Checkpoint::load(&path).unwrap_err(), &path);
    assert!(msg.contains("trailing bytes"), "{msg}");

    // Not a checkpoint.
    std::fs::write(&path, b"PK\x03\x04 this is a zip file, not a checkpoint").unwrap();
    let msg = ckpt_msg(Checkpoint::load(&path).unwrap_err(), &path);
    assert!(msg.contains("not a ringsgd checkpoint"), "{msg}");

    // A future version.
    let mut v2 = good.clone();
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &v2).unwrap();
    let msg = ckpt_msg(Checkpoint::load(&path).unwrap_err(), &path);
    assert!(
        msg.contains("unsupported checkpoint format version 2"),
        "{msg}"
    );

    // Missing file: an I/O error naming it.
    let missing = s.path().join("nope.ckpt");
    match Checkpoint::load(&missing).unwrap_err() {
        Error::Io { path, .. } => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
}

/// Re-seals a hand-edited body: fixes section count, length and CRC.
fn seal(mut body: Vec<u8>, sections: u32) -> Vec<u8> {
    body[12..16].copy_from_slice(&sections.to_le_bytes());
    let total = (body.len() + 4) as u64;
    body[16..24].copy_from_slice(&total.to_le_bytes());
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

#[test]
fn unknown_sections_are_skipped_and_structure_is_checked() {
    let good = sample().to_bytes().unwrap();
    let body = good[..good.len() - 4].to_vec();
    let path = Path::new("x.ckpt");

    // An extra section from a newer writer is ignored.
    let mut extra = body.clone();
    extra.extend_from_slice(b"XTRA");
    extra.extend_from_slice(&3u64.to_le_bytes());
    extra.extend_from_slice(&[9, 9, 9]);
    let back = Checkpoint::from_bytes(&seal(extra, 8), path).unwrap();
    assert!(same(&back, &sample()));

    // A duplicated section is not.
    let meta_len = u64::from_le_bytes(body[28..36].try_into().unwrap()) as usize;
    let mut dup = body.clone();
    dup.extend_from_slice(&body[24..36 + meta_len]);
    let msg = ckpt_msg(
        Checkpoint::from_bytes(&seal(dup, 8), path).unwrap_err(),
        path,
    );
    assert!(msg.contains("META appears twice"), "{msg}");

    // Nor a missing required one.
    let mut no_meta = body[..24].to_vec();
    no_meta.extend_from_slice(&body[36 + meta_len..]);
    let msg = ckpt_msg(
        Checkpoint::from_bytes(&seal(no_meta, 6), path).unwrap_err(),
        path,
    );
    assert!(msg.contains("required section META is missing"), "{msg}");

    // A section length that overruns the file, with a valid CRC.
    let mut over = body.clone();
    over[28..36].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let msg = ckpt_msg(
        Checkpoint::from_bytes(&seal(over, 7), path).unwrap_err(),
        path,
    );
    assert!(msg.contains("section META claims"), "{msg}");
}

#[test]
fn inconsistent_checkpoints_are_refused_on_save() {
    let s = Scratch::new("ckpt", "inconsistent");
    let path = s.path().join("c.ckpt");
    let mut c = sample();
    c.optimizer.momentum_buffer = Some(vec![0.0; 3]);
    let err = c.save_atomic(&path).unwrap_err().to_string();
    assert!(err.contains("momentum buffer has 3 values"), "{err}");
    let mut c = sample();
    c.config.push(("global_batch".into(), "64".into()));
    assert!(c
        .save_atomic(&path)
        .unwrap_err()
        .to_string()
        .contains("twice"));
    assert!(!path.exists());
    assert!(
        sample().save_atomic(s.path()).is_err(),
        "a folder is not a file path"
    );
}

#[test]
fn safetensors_round_trip_and_layout() {
    let s = Scratch::new("ckpt", "st");
    let path = s.path().join("model.safetensors");
    let conv: Vec<f32> = (0..2 * 3 * 3 * 3).map(|i| i as f32 * 0.25 - 3.0).collect();
    let bias = vec![0.5f32, -0.5];
    let fc: Vec<f32> = (0..10 * 2).map(|i| (i as f32).sin()).collect();
    let scalar = vec![7.0f32];
    let tensors: Vec<(String, Vec<usize>, &[f32])> = vec![
        ("fc.weight".into(), vec![10, 2], &fc),
        ("conv1.weight".into(), vec![2, 3, 3, 3], &conv),
        ("conv1.bias".into(), vec![2], &bias),
        ("step".into(), vec![], &scalar),
        ("empty".into(), vec![0, 4], &[]),
    ];
    let meta = vec![
        ("format".to_string(), "pt".to_string()),
        ("normalize_mean".into(), "[0.49, 0.48, 0.45]".into()),
        (
            "note".into(),
            "quote \" backslash \\ newline \n tab \t é".into(),
        ),
    ];
    safetensors::write(&path, &tensors, &meta).unwrap();

    let (back, back_meta) = safetensors::read_with_metadata(&path).unwrap();
    let mut want: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(n, s, d)| (n.clone(), s.clone(), d.to_vec()))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(back, want);
    assert_eq!(back_meta, meta);

    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % 8, 0, "data section is 8-byte aligned");
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(
        header.starts_with(r#"{"__metadata__":{"format":"pt","#),
        "{header}"
    );
    assert!(
        header.contains(r#""conv1.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#),
        "{header}"
    );
    assert!(
        header.contains(r#""step":{"dtype":"F32","shape":[],"#),
        "{header}"
    );
    // Data follows in name order, little-endian.
    assert_eq!(&bytes[8 + n..8 + n + 4], &0.5f32.to_le_bytes());
    assert_eq!(
        bytes.len(),
        8 + n + 4 * (conv.len() + bias.len() + fc.len() + 1)
    );
    // Same input, same bytes.
    safetensors::write(&s.path().join("again.safetensors"), &tensors, &meta).unwrap();
    assert_eq!(
        std::fs::read(s.path().join("again.safetensors")).unwrap(),
        bytes
    );
}

#[test]
fn safetensors_bad_input_is_rejected() {
    let s = Scratch::new("ckpt", "st-bad");
    let path = s.path().join("m.safetensors");
    let d = [1.0f32, 2.0];
    let w = |t: Vec<(String, Vec<usize>, &[f32])>, m: Vec<(String, String)>| {
        safetensors::write(&path, &t, &m).unwrap_err().to_string()
    };
    assert!(w(vec![("a".into(), vec![3], &d)], vec![]).contains("3 elements but 2 values"));
    assert!(w(
        vec![("a".into(), vec![2], &d), ("a".into(), vec![2], &d)],
        vec![]
    )
    .contains("twice"));
    assert!(w(vec![("__metadata__".into(), vec![2], &d)], vec![]).contains("reserved"));
    assert!(w(
        vec![],
        vec![("k".into(), "1".into()), ("k".into(), "2".into())]
    )
    .contains("twice"));

    // Hand-made files the reader must refuse.
    let file = |header: &str, data: &[u8]| -> String {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        std::fs::write(&path, &b).unwrap();
        ckpt_msg(safetensors::read(&path).unwrap_err(), &path)
    };
    let eight = [0u8; 8];
    assert!(file(
        r#"{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}"#,
        &eight
    )
    .contains("F16 is not supported"));
    assert!(file(
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &eight
    )
    .contains("do not hold"));
    assert!(file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &eight
    )
    .contains("gap or overlap"));
    assert!(file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &eight[..6]
    )
    .contains("truncated"));
    assert!(file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,
        &eight
    )
    .contains("bad safetensors header"));
    std::fs::write(&path, [200u8, 0, 0, 0, 0, 0, 0, 0, b'{', b'}']).unwrap();
    assert!(ckpt_msg(safetensors::read(&path).unwrap_err(), &path).contains("header length"));
}

/// The DATA section: what a run was trained on survives the round trip; a
/// checkpoint without it (as written before it existed) still loads, and
/// resumes with a warning; other data is refused naming every part that
/// differs.
#[test]
fn data_identity_round_trips_and_old_checkpoints_still_load() {
    let path = Path::new("data.ckpt");
    let c = sample();
    let back = Checkpoint::from_bytes(&c.to_bytes().unwrap(), path).unwrap();
    assert_eq!(back.data, c.data);
    let here = c.data.clone().unwrap();
    back.check_data(&here, path).unwrap();

    // The old layout: the same sections but DATA, byte for byte what the
    // writer produces without it.
    let old = Checkpoint {
        data: None,
        ..sample()
    };
    let bytes = old.to_bytes().unwrap();
    assert!(!bytes.windows(4).any(|w| w == b"DATA"));
    let loaded = Checkpoint::from_bytes(&bytes, path).unwrap();
    assert_eq!(loaded.data, None);
    loaded.check_data(&here, path).unwrap();

    let other = DataIdentity {
        kind: "synthetic".into(),
        train_images: 512,
        train_labels_crc: 2,
        ..here.clone()
    };
    let e = back.check_data(&other, path).unwrap_err().to_string();
    for needle in [
        "data.ckpt",
        "trained on other data",
        "kind: CIFAR-10 in the checkpoint, synthetic here",
        "training set size: 50000 images in the checkpoint, 512 images here",
        "training labels: crc32 00000001 in the checkpoint, crc32 00000002 here",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
    assert!(
        !e.contains("test set size") && !e.contains("test images"),
        "{e}"
    );
}
