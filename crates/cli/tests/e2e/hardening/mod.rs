//! Attacks of the hostile review (issue 10), reproduced and refused: what a
//! reader of the database file can do, token and refresh-token lifetimes.

mod devices;
mod limits;
mod secrets;

use devices::{
    a_ghost_device_gets_nothing, device_routes_refuse_bad_input,
    linked_devices_are_certified_and_removed_by_their_user,
};
use secrets::{
    a_replayed_refresh_token_kills_its_chain, rotating_the_token_key_kills_every_token,
    the_database_alone_cannot_mint_a_token,
};

on_both_backends!(
    a_ghost_device_gets_nothing,
    device_routes_refuse_bad_input,
    linked_devices_are_certified_and_removed_by_their_user,
    the_database_alone_cannot_mint_a_token,
    rotating_the_token_key_kills_every_token,
    a_replayed_refresh_token_kills_its_chain,
);
