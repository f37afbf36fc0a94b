//! MPI communicator (work in progress)
