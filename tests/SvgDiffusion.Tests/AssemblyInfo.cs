using Xunit;

// Test classes run one at a time: libtorch already uses every core for one test, and the training
// tests rely on the process-wide RNG (dropout) staying untouched by other tests between seeding and use.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
