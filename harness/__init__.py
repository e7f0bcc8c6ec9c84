"""The batch evaluation harness: tasks, backends, runner, results, reports, CLI."""

from rospr_harness.thirdparty import keep_third_parties_in_our_folders

keep_third_parties_in_our_folders()
