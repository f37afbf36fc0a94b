//! In-process communicator (work in progress)
