"""Leader election: PreVote (thesis §9.6), RequestVote (§5.2, §5.4.1) and TimeoutNow (§3.10).

A follower whose randomised election timeout expires first runs a pre-election: it asks
every voter whether it *would* vote for it in the next term, without changing its own term.
Only a majority of yes answers lets it become a candidate and bump the term. A server that
was cut off therefore cannot come back with an inflated term and depose a healthy leader.

A server grants a (pre-)vote only to a candidate whose log is at least as up to date as its
own (§5.4.1), and a real vote at most once per term (the vote is part of the hard state the
host persists before the answer leaves). With CheckQuorum, a server that heard from a leader
within the last election timeout ignores vote requests altogether (§4.2.3), unless the
request belongs to a leadership transfer.
"""

from __future__ import annotations

from graft.raft.messages import RequestVote, RequestVoteResponse, TimeoutNow
from graft.raft.quorum import VoteResult
from graft.raft.ready import Role
from graft.raft.replication import Replication


class Election(Replication):
    __slots__ = ()

    def _in_lease(self) -> bool:
        """§4.2.3: heard from a leader (or is one) within the minimum election timeout."""
        return (
            self._cfg.check_quorum
            and self.leader is not None
            and self.election_elapsed < self._cfg.election_ticks
        )

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        if not self._is_voter:
            return
        if pre_vote:
            self._become_precandidate()
            vote_term = self.term + 1
        else:
            self._become_candidate()
            vote_term = self.term

        self._record_vote(self.id, True, pre_vote, transfer)
        if self.role is Role.LEADER or self._tally is None:
            return

        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for voter in self._voters:
            if voter != self.id:
                self._msgs.append(
                    RequestVote(
                        vote_term, self.id, voter, last_index, last_term, pre_vote, transfer
                    )
                )

    def _record_vote(self, voter: str, granted: bool, pre_vote: bool, transfer: bool) -> None:
        tally = self._tally
        assert tally is not None
        tally.record(voter, granted)
        result = tally.result()
        if result is VoteResult.WON:
            if pre_vote:
                self._campaign(False, transfer)
            else:
                self._become_leader()
        elif result is VoteResult.LOST:
            self._logger.info(
                "node %s lost the %s at term %d",
                self.id,
                "pre-election" if pre_vote else "election",
                self.term,
            )
            self._become_follower(self.term, None)

    def _log_up_to_date(self, last_index: int, last_term: int) -> bool:
        return self.log.is_up_to_date(last_index, last_term)

    def _handle_request_vote(self, msg: RequestVote) -> None:
        up_to_date = self._log_up_to_date(msg.last_log_index, msg.last_log_term)
        if msg.pre_vote:
            # A pre-vote changes nothing here: no term, no vote (thesis §9.6).
            can_vote = msg.term > self.term or (self.vote in (None, msg.src) and not self.leader)
            granted = can_vote and up_to_date
            reply_term = msg.term if granted else self.term
        else:
            can_vote = self.vote == msg.src or (self.vote is None and self.leader is None)
            granted = can_vote and up_to_date
            reply_term = self.term
            if granted:
                self.vote = msg.src
                self.election_elapsed = 0
            self._logger.info(
                "node %s %s vote for %s at term %d",
                self.id,
                "granted" if granted else "refused",
                msg.src,
                self.term,
            )
        self._msgs.append(RequestVoteResponse(reply_term, self.id, msg.src, granted, msg.pre_vote))

    def _handle_vote_response(self, msg: RequestVoteResponse) -> None:
        if msg.pre_vote:
            if self.role is Role.PRECANDIDATE:
                self._record_vote(msg.src, msg.granted, True, False)
        elif self.role is Role.CANDIDATE and msg.term == self.term:
            self._record_vote(msg.src, msg.granted, False, False)

    def _handle_timeout_now(self, msg: TimeoutNow) -> None:
        if not self._is_voter or self.role is Role.LEADER:
            return
        self._logger.info(
            "node %s campaigns at once on TimeoutNow from %s at term %d",
            self.id,
            msg.src,
            self.term,
        )
        # §3.10: skip the pre-election; the transfer flag lets voters ignore their lease.
        self._campaign(False, transfer=True)
