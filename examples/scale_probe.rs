use ndarray::Array4;
use ringsgd::nn::Model;
use ringsgd::parallel::ComputePool;
fn main() {
    let x = Array4::from_elem((32, 3, 32, 32), 0.5f32);
    let labels = vec![1u8; 32];
    for cores in [1, 2] {
        let pool = ComputePool::new(cores).unwrap();
        let mut m = Model::from_spec(
            "conv3x3(32,p1) relu conv3x3(32,p1) relu flatten linear(10)",
            [3, 32, 32],
            1,
        )
        .unwrap();
        let mut best = vec![[f64::MAX; 2]; 3];
        for _ in 0..10 {
            m.train_step(&pool, x.view(), &labels).unwrap();
            for (b, p) in best.iter_mut().zip(m.last_profile()) {
                b[0] = b[0].min(p.forward_s);
                b[1] = b[1].min(p.backward_s);
            }
        }
        println!("cores {cores}: {:?}", best);
    }
}
