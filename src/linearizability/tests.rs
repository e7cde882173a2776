//! Hand-written histories with known answers, checked against [`KvModel`] and against models
//! that misbehave on purpose.

use super::*;

type Input = KvInput<&'static str, u32>;
type Output = KvOutput<u32>;
type History = Vec<Operation<Input, Output>>;

fn put(
    client: u64,
    key: &'static str,
    value: u32,
    call: u64,
    ret: u64,
) -> Operation<Input, Output> {
    Operation::ok(client, KvInput::Put { key, value }, call, ret, KvOutput::Done)
}

fn get(
    client: u64,
    key: &'static str,
    seen: Option<u32>,
    call: u64,
    ret: u64,
) -> Operation<Input, Output> {
    Operation::ok(client, KvInput::Get { key }, call, ret, KvOutput::Value(seen))
}

fn cas(
    client: u64,
    key: &'static str,
    expected: Option<u32>,
    new: u32,
    succeeded: bool,
    call: u64,
    ret: u64,
) -> Operation<Input, Output> {
    Operation::ok(client, KvInput::Cas { key, expected, new }, call, ret, KvOutput::Cas(succeeded))
}

fn delete(client: u64, key: &'static str, call: u64, ret: u64) -> Operation<Input, Output> {
    Operation::ok(client, KvInput::Delete { key }, call, ret, KvOutput::Done)
}

fn unknown_put(client: u64, key: &'static str, value: u32, call: u64) -> Operation<Input, Output> {
    Operation::unknown(client, KvInput::Put { key, value }, call)
}

/// The checker's answer for `history` against [`KvModel`]; a history error fails the test.
fn check_kv(history: &History) -> CheckResult {
    check(&KvModel::new(), history).expect("test histories are well formed")
}

fn assert_linearizable(history: &History) {
    assert_eq!(check_kv(history), CheckResult::Linearizable, "{history:#?}");
}

fn assert_not_linearizable(history: &History) {
    let result = check_kv(history);
    assert!(
        matches!(result, CheckResult::NotLinearizable { .. }),
        "expected a violation, got {result:?} for {history:#?}"
    );
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&vec![]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&vec![
        get(1, "x", None, 0, 1),
        put(1, "x", 1, 2, 3),
        get(2, "x", Some(1), 4, 5),
        cas(1, "x", Some(1), 2, true, 6, 7),
        cas(2, "x", Some(1), 4, false, 8, 9),
        get(3, "x", Some(2), 10, 11),
        delete(1, "x", 12, 13),
        get(2, "x", None, 14, 15),
        cas(3, "x", None, 3, true, 16, 17),
        get(1, "x", Some(3), 18, 19),
    ]);
}

#[test]
fn sequential_history_with_a_wrong_answer_is_not_linearizable() {
    assert_not_linearizable(&vec![put(1, "x", 1, 0, 1), cas(1, "x", Some(1), 2, false, 2, 3)]);
}

#[test]
fn read_overlapping_two_writes_may_see_either() {
    let writes = || vec![put(1, "x", 1, 0, 10), put(2, "x", 2, 0, 10)];
    for seen in [1, 2] {
        let mut history = writes();
        history.push(get(3, "x", Some(seen), 5, 15));
        assert_linearizable(&history);
    }
    // A read after both writes may also see either; here the overlapping read saw 2 and the
    // later one 1, which the order put 2, read, put 1, read explains.
    let mut history = writes();
    history.push(get(3, "x", Some(2), 5, 15));
    history.push(get(3, "x", Some(1), 20, 21));
    assert_linearizable(&history);
}

#[test]
fn read_overlapping_writes_cannot_invent_a_value() {
    let mut history = vec![put(1, "x", 1, 0, 10), put(2, "x", 2, 0, 10)];
    history.push(get(3, "x", Some(3), 5, 15));
    assert_not_linearizable(&history);
}

#[test]
fn read_concurrent_with_a_write_may_see_the_old_or_new_value() {
    for seen in [1, 2] {
        assert_linearizable(&vec![
            put(1, "x", 1, 0, 1),
            put(1, "x", 2, 5, 15),
            get(2, "x", Some(seen), 6, 10),
        ]);
    }
}

#[test]
fn stale_read_after_a_completed_write_is_not_linearizable() {
    let history = vec![put(1, "x", 1, 0, 1), put(1, "x", 2, 2, 3), get(2, "x", Some(1), 4, 5)];
    assert_eq!(
        check_kv(&history),
        CheckResult::NotLinearizable {
            partition: 0,
            operations: vec![0, 1, 2],
            longest_linearization: vec![0, 1],
        }
    );
}

#[test]
fn reads_seeing_new_then_old_value_in_real_time_order_are_not_linearizable() {
    assert_not_linearizable(&vec![
        put(1, "x", 1, 0, 1),
        put(1, "x", 2, 5, 20),
        get(2, "x", Some(2), 6, 8),
        get(3, "x", Some(1), 10, 12),
    ]);
    // The same reads overlapping each other are fine: the old value may be read first.
    assert_linearizable(&vec![
        put(1, "x", 1, 0, 1),
        put(1, "x", 2, 5, 20),
        get(2, "x", Some(2), 6, 11),
        get(3, "x", Some(1), 10, 12),
    ]);
}

#[test]
fn two_successful_cas_from_the_same_expected_value_are_not_linearizable() {
    assert_not_linearizable(&vec![
        put(1, "x", 0, 0, 1),
        cas(2, "x", Some(0), 1, true, 2, 10),
        cas(3, "x", Some(0), 2, true, 3, 11),
    ]);
    // Only one of them winning is fine, whichever it is.
    for (first_wins, second_wins) in [(true, false), (false, true)] {
        assert_linearizable(&vec![
            put(1, "x", 0, 0, 1),
            cas(2, "x", Some(0), 1, first_wins, 2, 10),
            cas(3, "x", Some(0), 2, second_wins, 3, 11),
        ]);
    }
}

#[test]
fn intervals_sharing_an_instant_are_concurrent() {
    assert_linearizable(&vec![put(1, "x", 1, 0, 5), get(2, "x", None, 5, 6)]);
    assert_not_linearizable(&vec![put(1, "x", 1, 0, 5), get(2, "x", None, 6, 7)]);
}

#[test]
fn unknown_write_whose_value_is_read_later_is_linearizable() {
    assert_linearizable(&vec![
        put(1, "x", 1, 0, 1),
        unknown_put(2, "x", 2, 2),
        get(3, "x", Some(2), 10, 11),
        get(3, "x", Some(2), 12, 13),
    ]);
}

#[test]
fn unknown_write_cannot_be_undone_once_observed() {
    assert_not_linearizable(&vec![
        put(1, "x", 1, 0, 1),
        unknown_put(2, "x", 2, 2),
        get(3, "x", Some(2), 10, 11),
        get(3, "x", Some(1), 12, 13),
    ]);
}

#[test]
fn unknown_write_never_observed_is_linearizable() {
    assert_linearizable(&vec![
        put(1, "x", 1, 0, 1),
        unknown_put(2, "x", 2, 2),
        get(3, "x", Some(1), 10, 11),
        get(3, "x", Some(1), 20, 21),
    ]);
}

#[test]
fn unknown_cas_may_never_take_effect() {
    assert_linearizable(&vec![
        put(1, "x", 1, 0, 1),
        Operation::unknown(2, KvInput::Cas { key: "x", expected: Some(1), new: 2 }, 2),
        get(3, "x", Some(1), 10, 11),
    ]);
}

#[test]
fn unknown_write_read_before_it_was_called_is_not_linearizable() {
    assert_not_linearizable(&vec![get(1, "x", Some(2), 0, 5), unknown_put(2, "x", 2, 10)]);
}

#[test]
fn failed_operations_are_ignored() {
    let failed_put = Operation::failed(1, KvInput::Put { key: "x", value: 2 }, 0);
    assert_not_linearizable(&vec![failed_put.clone(), get(2, "x", Some(2), 5, 6)]);
    assert_linearizable(&vec![failed_put, get(2, "x", None, 5, 6)]);
}

#[test]
fn independent_keys_are_checked_separately() {
    // Interleaved in time, each key on its own is linearizable.
    assert_linearizable(&vec![
        put(1, "a", 1, 0, 10),
        put(2, "b", 7, 1, 4),
        get(3, "a", Some(1), 5, 12),
        get(4, "b", Some(7), 6, 7),
        cas(1, "b", Some(7), 8, true, 11, 13),
        get(2, "a", Some(1), 14, 15),
        get(3, "b", Some(8), 14, 16),
    ]);
}

#[test]
fn violation_is_reported_with_its_key_partition() {
    let history = vec![
        put(1, "a", 1, 0, 10),
        put(2, "b", 7, 1, 4),
        get(3, "a", Some(1), 5, 12),
        Operation::failed(4, KvInput::Delete { key: "b" }, 5),
        get(4, "b", None, 6, 7),
        get(2, "a", Some(1), 14, 15),
    ];
    let CheckResult::NotLinearizable { partition, operations, longest_linearization } =
        check_kv(&history)
    else {
        panic!("the stale read of b went unnoticed");
    };
    // Keys sort as "a", "b"; the failed delete is left out.
    assert_eq!(partition, 1);
    assert_eq!(operations, vec![1, 4]);
    assert_eq!(longest_linearization, vec![1]);
}

#[test]
fn return_before_call_is_an_error() {
    let history = vec![put(1, "x", 1, 0, 1), get(2, "x", Some(1), 9, 8)];
    assert_eq!(
        check(&KvModel::new(), &history),
        Err(HistoryError::ReturnBeforeCall { operation: 1, call_time: 9, return_time: 8 })
    );
}

/// A [`KvModel`] whose partition is whatever the test says, however wrong.
struct FixedPartition(Vec<Vec<usize>>);

impl Model for FixedPartition {
    type Input = Input;
    type Output = Output;
    type State = Option<u32>;

    fn initial_state(&self) -> Option<u32> {
        None
    }

    fn step(&self, state: &Option<u32>, input: &Input) -> (Option<u32>, Output) {
        KvModel::new().step(state, input)
    }

    fn partition(&self, _history: &[Operation<Input, Output>]) -> Vec<Vec<usize>> {
        self.0.clone()
    }
}

#[test]
fn a_partition_that_is_not_one_is_an_error() {
    let history = vec![put(1, "x", 1, 0, 1), get(2, "x", Some(1), 2, 3)];
    let check_with = |partitions: Vec<Vec<usize>>| check(&FixedPartition(partitions), &history);
    assert_eq!(
        check_with(vec![vec![0, 1, 2]]),
        Err(HistoryError::PartitionIndexOutOfRange { partition: 0, index: 2, history_length: 2 })
    );
    assert_eq!(
        check_with(vec![vec![0], vec![0, 1]]),
        Err(HistoryError::OperationInSeveralPartitions { operation: 0 })
    );
    assert_eq!(
        check_with(vec![vec![1]]),
        Err(HistoryError::OperationInNoPartition { operation: 0 })
    );
    assert_eq!(check_with(vec![vec![1, 0]]), Ok(CheckResult::Linearizable));
}

#[test]
fn operations_of_a_partition_may_come_in_any_order() {
    let history = vec![put(1, "x", 1, 0, 1), put(1, "x", 2, 2, 3), get(2, "x", Some(1), 4, 5)];
    let result = check(&FixedPartition(vec![vec![2, 0, 1]]), &history);
    assert_eq!(
        result,
        Ok(CheckResult::NotLinearizable {
            partition: 0,
            operations: vec![0, 1, 2],
            longest_linearization: vec![0, 1],
        })
    );
}

#[test]
fn exhausting_the_limit_gives_up() {
    let history = vec![put(1, "x", 1, 0, 1), put(1, "x", 2, 2, 3), get(2, "x", Some(2), 4, 5)];
    assert_eq!(
        check_with_limit(&KvModel::new(), &history, 2),
        Ok(CheckResult::GaveUp { partition: 0, explored: 2 })
    );
    assert_eq!(check_with_limit(&KvModel::new(), &history, 3), Ok(CheckResult::Linearizable));
    assert_eq!(
        check_with_limit(&KvModel::new(), &History::new(), 0),
        Ok(CheckResult::Linearizable)
    );
}

#[test]
fn a_definite_violation_outranks_giving_up_elsewhere() {
    let history = vec![
        put(1, "a", 1, 0, 1),
        put(1, "a", 2, 2, 3),
        get(2, "a", Some(2), 4, 5),
        get(3, "b", Some(9), 0, 1),
    ];
    assert_eq!(
        check_with_limit(&KvModel::new(), &history, 1),
        Ok(CheckResult::NotLinearizable {
            partition: 1,
            operations: vec![3],
            longest_linearization: vec![],
        })
    );
}

/// A model that knows nothing: every step answers the same, so any history of matching
/// answers is linearizable. Checks that the default partition covers the whole history.
struct Constant;

impl Model for Constant {
    type Input = u8;
    type Output = u8;
    type State = ();

    fn initial_state(&self) {}

    fn step(&self, _state: &(), _input: &u8) -> ((), u8) {
        ((), 0)
    }
}

#[test]
fn default_partition_holds_every_operation() {
    let good = vec![Operation::ok(1, 1, 0, 1, 0), Operation::ok(2, 2, 0, 1, 0)];
    assert_eq!(check(&Constant, &good), Ok(CheckResult::Linearizable));
    let bad = vec![Operation::ok(1, 1, 0, 1, 0), Operation::ok(2, 2, 0, 1, 1)];
    assert_eq!(
        check(&Constant, &bad),
        Ok(CheckResult::NotLinearizable {
            partition: 0,
            operations: vec![0, 1],
            longest_linearization: vec![0],
        })
    );
}
