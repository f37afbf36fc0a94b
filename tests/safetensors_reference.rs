//! Our safetensors writer checked against the reference implementation
//! (the `safetensors` crate, a dev-dependency only): what we write parses
//! there to the same tensors and metadata, and without metadata the bytes
//! are exactly the reference serializer's.

use ringsgd::checkpoint::safetensors as ours;
use ringsgd::nn::Model;
use ringsgd::trainer::export_safetensors;
use safetensors::tensor::{serialize, Dtype, SafeTensors, TensorView};

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ringsgd-st-ref-{}-{name}", std::process::id()))
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn a_pinet_export_reads_back_in_the_reference_implementation() {
    let model = Model::pinet(3).unwrap();
    let path = temp("pinet.safetensors");
    export_safetensors(&model, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).expect("the reference parser accepts our file");
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let md = meta.metadata().as_ref().expect("metadata written");
    assert_eq!(
        md.get("ringsgd.spec").map(String::as_str),
        Some(model.spec())
    );
    assert_eq!(
        md.get("ringsgd.input_chw").map(String::as_str),
        Some("3,32,32")
    );
    assert_eq!(st.len(), model.tensors().len());
    for t in model.tensors() {
        let view = st
            .tensor(&t.name)
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(view.dtype(), Dtype::F32, "{}", t.name);
        assert_eq!(view.shape(), &t.shape[..], "{}", t.name);
        assert_eq!(
            view.data(),
            &le_bytes(&model.params()[t.offset..t.offset + t.len])[..],
            "{}",
            t.name
        );
    }
}

#[test]
fn without_metadata_our_bytes_are_the_reference_serializers() {
    let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let b = [3.5f32, -0.0, f32::MIN_POSITIVE];
    let tensors = vec![
        ("z.weight".to_string(), vec![3, 4], &a[..]),
        ("a.bias".to_string(), vec![3], &b[..]),
        ("scalar".to_string(), vec![], &b[..1]),
    ];
    let path = temp("plain.safetensors");
    ours::write(&path, &tensors, &[]).unwrap();
    let mine = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), le_bytes(v)))
        .collect();
    let views = data.iter().map(|(n, s, d)| {
        (
            n.as_str(),
            TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
        )
    });
    let reference = serialize(views, None).unwrap();
    assert_eq!(mine, reference);
}
